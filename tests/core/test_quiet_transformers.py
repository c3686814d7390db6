"""The quiet-loading block is re-entrant across threads: only the last block to leave restores the settings."""
from __future__ import annotations

import threading


def test_overlapping_blocks_restore_once_and_only_at_the_end():
    from transformers.utils import logging as hf_logging

    from explorer.core.model import quiet_transformers

    hf_logging.enable_progress_bar()
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with quiet_transformers():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(10)
    with quiet_transformers():
        assert not hf_logging.is_progress_bar_enabled()
    # the other thread is still loading: leaving our block must not turn the bar back on under it
    assert not hf_logging.is_progress_bar_enabled()
    release.set()
    t.join(10)
    assert hf_logging.is_progress_bar_enabled()
