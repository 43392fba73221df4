"""The IPC kernel manager: a private socket folder, removed at shutdown, and the kernel's own log in a file."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from saetrack.kernel import IPCKernelManager


def test_ipc_kernel_manager_uses_a_private_folder_and_removes_it(tmp_path: Path) -> None:
    kernel_log = tmp_path / "kernel.log"

    async def start_and_stop() -> tuple[dict, str, int, bool]:
        km = IPCKernelManager(kernel_name="python3", kernel_log=str(kernel_log))
        await km.start_kernel(extra_arguments=["--IPKernelApp.log_level=INFO"])
        try:
            client = km.client()
            client.start_channels()
            await client.wait_for_ready(timeout=60)
            client.stop_channels()
            info = dict(km.get_connection_info())
            folder = os.path.dirname(km.connection_file)
            mode = stat.S_IMODE(os.stat(folder).st_mode) & 0o777  # (jupyter adds the sticky bit)
        finally:
            await km.shutdown_kernel(now=True)
        return info, folder, mode, os.path.exists(folder)

    info, folder, mode, still_there = asyncio.run(start_and_stop())
    assert info["transport"] == "ipc"
    assert str(info["ip"]).startswith(folder + os.sep)
    assert mode == 0o700
    assert not still_there
    assert "Starting the kernel at pid" in kernel_log.read_text()  # the kernel process's own log, not our stderr
