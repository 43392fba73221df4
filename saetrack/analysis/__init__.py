"""The paper's analyses as pure functions on arrays and SAE weights (no files): feature statistics and labels
(Sec. 4, Def. 4.1-4.2, App. A.1), progress measures (Def. 5.4, Eq. 14-19, 27-29), activation sets and UMAP (Sec. 5,
Fig. 4), feature regions (Def. 5.1-5.3, Fig. 3), decoder drift and phases (Sec. 6), feature matching, SAE quality
metrics and convergence speed.
"""
