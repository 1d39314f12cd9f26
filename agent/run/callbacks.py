"""SB3 callbacks of a training run: progress bar, episode metrics, periodic work, graceful stop.

Training is extended only through these; the algorithms' loops are untouched.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

# env's end-of-episode info key -> logged name under rollout/ (envs.contract.EPISODE_KEYS)
EPISODE_METRICS: dict[str, str] = {
    "success": "success_rate",
    "collision": "collision_rate",
    "off_road": "off_road_rate",
    "distance": "distance",
    "mean_speed": "mean_speed",
}


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, ... (or the number of a signal Python does not name)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_status(signum: int) -> int:
    """The exit status of a process stopped by ``signum``, as shells report it: 128 + the signal
    number (130 for Ctrl-C's SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


class StopFlag:
    """Set by SIGINT/SIGTERM while :func:`graceful_stop` is active."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def is_set(self) -> bool:
        return self.signal is not None

    @property
    def exit_status(self) -> int | None:
        """130 after SIGINT, 143 after SIGTERM; None while no signal has come."""
        return None if self.signal is None else exit_status(self.signal)


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Turn the first SIGINT/SIGTERM into a flag (training stops and saves); a second one aborts.

    Only the main thread can handle signals: elsewhere (a Ray Tune trial runs in a thread) the
    flag is never set and the process's own handlers stay in charge."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: Any) -> None:
        if flag.is_set:
            raise KeyboardInterrupt
        flag.signal = signum
        print(
            f"\n{signal_name(signum)} received: stopping after this step and saving a "
            "checkpoint (send it again to abort without saving)",
            file=sys.stderr,
        )

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class StopOnSignal(BaseCallback):
    """Ends ``learn`` at the next step once the stop flag is set."""

    def __init__(self, flag: StopFlag) -> None:
        super().__init__()
        self.flag = flag

    def _on_step(self) -> bool:
        return not self.flag.is_set


class ProgressBar(BaseCallback):
    """tqdm bar over the run's total steps, with steps/s and the latest episode return."""

    def __init__(self, total_steps: int) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.bar: Any = None
        self._shown = 0

    def _on_training_start(self) -> None:
        self._shown = self.num_timesteps
        self.bar = tqdm(
            total=self.total_steps,
            initial=self._shown,
            unit="step",
            dynamic_ncols=True,
            smoothing=0.05,
            file=sys.stderr,
        )

    def _on_step(self) -> bool:
        if self.bar is not None and self.num_timesteps > self._shown:
            if self.num_timesteps > self.bar.total:  # PPO finishes its last rollout
                self.bar.total = self.num_timesteps
            self.bar.update(self.num_timesteps - self._shown)
            self._shown = self.num_timesteps
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.ep_info_buffer
        if self.bar is not None and buffer:
            self.bar.set_postfix(
                ep_return=f"{np.mean([e['r'] for e in buffer]):.2f}", refresh=False
            )

    def write(self, text: str) -> None:
        """Print a line above the bar."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        """End the bar's line (also when training stops with an error)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpisodeMetrics(BaseCallback):
    """The env's end-of-episode metrics and summed reward terms, under ``rollout/``.

    Averaged over the episodes that ended since SB3's last log dump (``record_mean``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._terms: list[dict[str, float]] = []

    def _on_training_start(self) -> None:
        self._terms = [{} for _ in range(self.training_env.num_envs)]

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        dones = self.locals.get("dones", np.zeros(len(infos), dtype=bool))
        for i, (info, done) in enumerate(zip(infos, dones)):
            terms = self._terms[i]
            for name, value in info.get("reward_terms", {}).items():
                terms[name] = terms.get(name, 0.0) + float(value)
            if not done:
                continue
            for key, name in EPISODE_METRICS.items():
                if key in info:
                    self.logger.record_mean(f"rollout/{name}", float(info[key]))
            for name, value in terms.items():
                self.logger.record_mean(f"rollout/reward/{name}", value)
            self._terms[i] = {}
        return True


class Periodic(BaseCallback):
    """Calls ``action(num_timesteps)`` each time the step counter passes a multiple of ``every``."""

    def __init__(self, every: int, action: Callable[[int], None]) -> None:
        super().__init__()
        self.every = every
        self.action = action
        self._next = every

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.action(self.num_timesteps)
            self._next = (self.num_timesteps // self.every + 1) * self.every
        return True
