"""The density study's links: their folders and the hash that says a finished link may be kept.

Training the sparse chains on the smoke run (first link shared, links as the chain's, resume) is tested in
``tests/stages/drift/test_density.py``.
"""

from __future__ import annotations

from saetrack.config import RunConfig
from saetrack.stages.chain import chain_config_hash
from saetrack.stages.drift.density_links import density_link_hash, stride_dir_name


def test_each_stride_has_its_folder() -> None:
    assert [stride_dir_name(s) for s in (2, 4, 8)] == ["stride2", "stride4", "stride8"]


def test_a_link_is_kept_while_the_chain_it_continues_is_unchanged(smoke: RunConfig) -> None:
    digest = density_link_hash(smoke)
    assert digest == density_link_hash(smoke) and digest != chain_config_hash(smoke)
    # the strides and the drift section do not touch a finished link; anything the chain trains with does
    assert density_link_hash(smoke.with_overrides({"drift.density_strides": (2,), "drift.max_segments": 4})) == digest
    assert density_link_hash(smoke.with_overrides({"chain.lr_link": 1e-2})) != digest
    assert density_link_hash(smoke.with_overrides({"chain.link_tokens": 8192})) != digest
