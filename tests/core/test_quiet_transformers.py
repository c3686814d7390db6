"""The quiet-loading block is re-entrant across threads: only the last block to leave restores the settings."""
from __future__ import annotations

from tests.helpers import held_in_thread


def test_overlapping_blocks_restore_once_and_only_at_the_end():
    from transformers.utils import logging as hf_logging

    from explorer.core.model import quiet_transformers

    hf_logging.enable_progress_bar()
    with held_in_thread(quiet_transformers()) as other:
        with quiet_transformers():
            assert not hf_logging.is_progress_bar_enabled()
        # the other thread is still loading: leaving our block must not turn the bar back on under it
        assert not hf_logging.is_progress_bar_enabled()
        other.release()
        assert hf_logging.is_progress_bar_enabled()
