"""Jupyter kernels that listen on no network port.

The kernel's sockets use IPC transport in a private folder, and its pipe for output of forked subprocesses is a
Unix socket there too instead of ipykernel's loopback TCP port.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import IO, Any

from jupyter_client.manager import AsyncKernelManager, KernelManager
from traitlets import Dict, Unicode, default

__all__ = [
    "IPCKernelManager",
]

# How an IPC kernel is started instead of ``python -m ipykernel_launcher``: the same launch, except that ipykernel's
# pipe for the output of forked subprocesses (a PULL socket it binds to a random TCP port on 127.0.0.1 whatever the
# transport, ipykernel/iostream.py) goes to a Unix socket in the kernel's private folder. Should ipykernel's
# internals differ from what this expects, the stock TCP pipe is used.
_KERNEL_BOOTSTRAP = """\
import os, sys
if sys.path and sys.path[0] == "":
    del sys.path[0]
import zmq
from ipykernel import iostream, kernelapp
PIPE = @PIPE@
stock_in, stock_out = iostream.IOPubThread._setup_pipe_in, iostream.IOPubThread._setup_pipe_out
def setup_pipe_in(self):
    try:
        self._pipe_uuid = os.urandom(16)
        pipe_in = self.socket.context.socket(zmq.PULL)
        pipe_in.linger = 0
        pipe_in.bind(PIPE)
        self._pipe_in = iostream.ZMQStream(pipe_in, self.io_loop)
        self._pipe_in.on_recv(self._handle_pipe_msg)
        self._saetrack_ipc_pipe = True
    except Exception:
        stock_in(self)
def setup_pipe_out(self):
    if not getattr(self, "_saetrack_ipc_pipe", False):
        return stock_out(self)
    ctx = zmq.Context()
    pipe_out = ctx.socket(zmq.PUSH)
    pipe_out.linger = 3000
    pipe_out.connect(PIPE)
    return ctx, pipe_out
if hasattr(iostream.IOPubThread, "_handle_pipe_msg"):
    iostream.IOPubThread._setup_pipe_in, iostream.IOPubThread._setup_pipe_out = setup_pipe_in, setup_pipe_out
kernelapp.launch_new_instance()
"""


class IPCKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel uses the IPC transport: Unix sockets in a private (0700) temporary folder.

    No TCP port is opened: the five kernel channels are Unix sockets, and so is ipykernel's pipe for the output of
    forked subprocesses (:data:`_KERNEL_BOOTSTRAP`). Nothing on the network, and no other local user, can reach the
    kernel, and ipykernel does not warn about unencrypted TCP. The folder (connection file and sockets) is removed
    when the kernel shuts down. ``extra_env`` is added to the kernel's environment; ``kernel_log`` names a file that
    receives the kernel process's own output (its log: start-up, shutdown, crashes), which would otherwise go to
    our terminal between the streamed cell output.
    """

    extra_env = Dict(value_trait=Unicode(), help="variables added to the kernel's environment").tag(config=True)
    kernel_log = Unicode("", help="file for the kernel process's own stdout/stderr; empty: ours").tag(config=True)
    _ipc_dir: str | None = None
    _log: IO[bytes] | None = None

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        if self._ipc_dir is None:  # a restart keeps the folder, connection file and socket names
            self._ipc_dir = tempfile.mkdtemp(prefix="saetrack-kernel-")
            self.transport = "ipc"
            self.connection_file = os.path.join(self._ipc_dir, "kernel.json")
            self.ip = os.path.join(self._ipc_dir, "ipc")  # the channels' sockets are <ip>-<n>
        if self.extra_env:
            kw["env"] = {**kw.get("env", os.environ), **self.extra_env}
        if self.kernel_log and "stderr" not in kw:
            if self._log is None:  # kept open for a restart; closed with the kernel's other resources
                self._log = open(self.kernel_log, "wb")
            kw["stdout"] = kw["stderr"] = self._log
        return await KernelManager._async_pre_start_kernel(self, **kw)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        """The kernelspec's command; ``python -m ipykernel_launcher ...`` becomes the IPC-pipe bootstrap."""
        cmd = super().format_kernel_cmd(extra_arguments)
        if self._ipc_dir is not None and cmd[1:3] == ["-m", "ipykernel_launcher"]:
            pipe = "ipc://" + os.path.join(self._ipc_dir, "iopub-pipe")
            cmd = [cmd[0], "-c", _KERNEL_BOOTSTRAP.replace("@PIPE@", repr(pipe)), *cmd[3:]]
        return cmd

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await KernelManager._async_cleanup_resources(self, restart=restart)
        if not restart and self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None
        if not restart and self._log is not None:
            self._log.close()
            self._log = None

    pre_start_kernel = _async_pre_start_kernel  # type: ignore[assignment]
    cleanup_resources = _async_cleanup_resources  # type: ignore[assignment]
