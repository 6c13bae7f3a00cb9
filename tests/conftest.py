"""Shared fixtures: synthetic user clips (one colour and one tone per user), generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import COLORS, TONES, write_test_clip


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Nine 6-second 320x180 15 fps clips, user i in ``COLORS[i]`` with a ``TONES[i]`` tone."""
    folder = tmp_path_factory.mktemp("clips")
    return [
        write_test_clip(folder / f"user{i}.mp4", color=COLORS[i], tone_hz=TONES[i], seconds=6.0)
        for i in range(len(COLORS))
    ]


@pytest.fixture(scope="session")
def clip_4x3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 240x180 (4:3) clip in ``COLORS[0]`` without audio."""
    return write_test_clip(
        tmp_path_factory.mktemp("clip43") / "four_three.mp4", color=COLORS[0], tone_hz=None, width=240, height=180
    )
