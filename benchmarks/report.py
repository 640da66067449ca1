"""The JSON report every benchmark writes: its configuration, the machine, peak memory, its results.

Peak memory is the resident high-water mark (Linux `VmHWM`) of this Python
process and of the TFF workers it started (`tff_orchestra.runtime`), which a
thread started by `watch_memory()` reads while they run (a worker's is lost
when it stops). `MemoryWatch.reset()` restarts both marks, so a benchmark can
report the peak of each case or round.
"""

from __future__ import annotations

import json
import os
import platform
import threading
from typing import Any, Optional

from tff_orchestra import runtime


def peak_rss_mib(pid: str = 'self') -> float:
  """Peak resident memory (VmHWM) of a process, MiB."""
  with open(f'/proc/{pid}/status') as status:
    for line in status:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  raise RuntimeError(f'no VmHWM in /proc/{pid}/status')


def reset_peak_rss(pid: str = 'self') -> None:
  """Restarts a process's VmHWM from its current resident memory (Linux)."""
  with open(f'/proc/{pid}/clear_refs', 'w') as clear_refs:
    clear_refs.write('5')


class MemoryWatch:
  """Polls the peak memory of this process's TFF workers every `interval` seconds, in a daemon thread."""

  def __init__(self, interval: float = 0.2):
    self._lock = threading.Lock()
    self._worker_peak = 0.0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True)
    self._thread.start()

  def _read_workers(self) -> None:
    for worker in runtime.running_workers():
      try:
        peak = peak_rss_mib(str(worker.pid))
      except (OSError, RuntimeError):  # It stopped between the listing and the read.
        continue
      with self._lock:
        self._worker_peak = max(self._worker_peak, peak)

  def _poll(self, interval: float) -> None:
    while not self._stop.wait(interval):
      self._read_workers()

  def reset(self) -> None:
    """Restarts the peaks of this process and of the running workers."""
    reset_peak_rss()
    for worker in runtime.running_workers():
      try:
        reset_peak_rss(str(worker.pid))
      except OSError:
        pass
    with self._lock:
      self._worker_peak = 0.0

  def peaks(self) -> dict[str, float]:
    """{'python_peak_rss_mib', 'worker_peak_rss_mib'} since the start or the last `reset()` (MiB)."""
    self._read_workers()
    with self._lock:
      return dict(python_peak_rss_mib=peak_rss_mib(), worker_peak_rss_mib=self._worker_peak)


_watch: Optional[MemoryWatch] = None


def watch_memory() -> MemoryWatch:
  """The process's `MemoryWatch`, started on the first call."""
  global _watch
  if _watch is None:
    _watch = MemoryWatch()
  return _watch


def write_report(path: str, config: dict[str, Any], **results: Any) -> None:
  """Writes `{'config', 'machine', 'peak_memory', **results}` to `path` (folders created) and says so.

  `peak_memory` is over the whole run: this process's high-water mark (since
  its start or the last reset) and its workers' (while `watch_memory()` ran).
  """
  report = {
      'config': config,
      'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'python': platform.python_version()},
      'peak_memory': watch_memory().peaks(),
      **results,
  }
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as file:
    json.dump(report, file, indent=1)
  print(f'wrote {path}')
