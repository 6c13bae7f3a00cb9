"""``mpu render`` end to end: render files, decode the output with PyAV, check pixels, spectrum and timing."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from rtc_mpu.cli.main import main
from rtc_mpu.layouts import system_layout
from rtc_mpu.mixer.video.geometry import Rect, fit, pane_rect
from rtc_mpu.spec.colors import rgb_from_color_int
from rtc_mpu.spec.task import CropMode
from tests.media import COLORS, TONES, decode_audio, decode_video, rgb, tone_level_db

#: MediaEncode 1: 640x360, 15 fps, 500 kbit/s (small, so the suite stays fast on 2 cores).
ENCODE, WIDTH, HEIGHT, FPS = 1, 640, 360, 15
#: A background distinct from every user colour: R=90, G=20, B=120.
BACKGROUND = 90 + 20 * 256 + 120 * 65536
#: Largest per-channel difference (8-bit) accepted between a decoded mean colour and the expected one.
TOLERANCE = 12


def render(tmp_path: Path, inputs: list[Path], *args: str, name: str = "out.flv") -> Path:
    out = tmp_path / name
    code = main(["render", "--media-encode", str(ENCODE), "--output", str(out), *args, *map(str, inputs)])
    assert code == 0
    return out


def write_switching_clip(
    path: Path,
    first: tuple[int, int, int],
    second: tuple[int, int, int],
    switch_at: int,
    frames: int,
    fps: int,
) -> Path:
    """A 320x180 H.264 + AAC clip at ``fps``: pictures ``0 .. switch_at - 1`` in ``first``, then ``second``.

    Encoded with x264 ``veryfast`` (B-frames, so the decoder reorders and returns pictures late) and
    a 48 kHz tone, so audio and video packets interleave as in real files.
    """
    width, height, rate = 320, 180, 48000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "18"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        for i in range(frames):
            picture = np.empty((height, width, 3), np.uint8)
            picture[:] = first if i < switch_at else second
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        total = frames * rate // fps
        for start in range(0, total, 1024):
            t = np.arange(start, min(start + 1024, total), dtype=np.float64) / rate
            block = av.AudioFrame.from_ndarray(
                (0.3 * np.sin(2 * np.pi * TONES[0] * t)).astype(np.float32)[None, :],
                format="fltp",
                layout="mono",
            )
            block.sample_rate, block.pts, block.time_base = rate, start, Fraction(1, rate)
            container.mux(audio.encode(block))
        container.mux(audio.encode(None))
    return path


def nearest_color(actual: npt.NDArray[np.float64], candidates: dict[str, tuple[int, int, int]]) -> str:
    """The name of the candidate colour closest to ``actual`` (largest per-channel difference)."""
    return min(candidates, key=lambda name: float(np.abs(actual - np.array(candidates[name])).max()))


def mean_rgb(picture: npt.NDArray[np.uint8], rect: Rect, inset: int = 4) -> npt.NDArray[np.float64]:
    region = picture[
        rect.y + inset : rect.y + rect.height - inset, rect.x + inset : rect.x + rect.width - inset
    ]
    result: npt.NDArray[np.float64] = region.reshape(-1, 3).mean(axis=0)
    return result


def assert_color(actual: npt.NDArray[np.float64], expected: tuple[int, int, int], what: str) -> None:
    diff = np.abs(actual - np.array(expected, dtype=np.float64)).max()
    assert diff <= TOLERANCE, f"{what}: mean colour {actual.round(1)} is not {expected} (max diff {diff:.1f})"


def outside_mask(layout_id: int) -> npt.NDArray[np.bool_]:
    """Pixels more than 4 px away from every pane's picture (padded 16:9 inputs) of the layout."""
    mask = np.ones((HEIGHT, WIDTH), dtype=bool)
    for pane in system_layout(layout_id).panes:
        r = pane_rect(pane, WIDTH, HEIGHT)
        r = fit(320, 180, r, CropMode.PAD).target
        mask[max(r.y - 4, 0) : r.y + r.height + 4, max(r.x - 4, 0) : r.x + r.width + 4] = False
    return mask


@pytest.mark.parametrize("layout_id", [1, 2, 3, 6, 9, 11, 13])
def test_each_pane_shows_its_user_and_the_rest_is_background(
    tmp_path: Path, clips: list[Path], layout_id: int
) -> None:
    layout = system_layout(layout_id)
    users = clips[: layout.pane_count]
    out = render(
        tmp_path,
        users,
        "--layout-ids",
        str(layout_id),
        "--duration",
        "1",
        "--background-color",
        str(BACKGROUND),
    )
    frames = decode_video(out)
    assert len(frames) == FPS
    picture = rgb(frames[-1])
    assert picture.shape == (HEIGHT, WIDTH, 3)
    visible = sorted(layout.panes, key=lambda p: p.zorder)
    for pane in layout.panes:
        # Inputs are 16:9 and CropMode defaults to pad: the picture fills the part fit() computes.
        rect = fit(320, 180, pane_rect(pane, WIDTH, HEIGHT), CropMode.PAD).target
        covered = [p for p in visible if p.zorder > pane.zorder]
        if covered:  # a picture-in-picture base pane: sample away from the small pane on top of it
            top = pane_rect(covered[0], WIDTH, HEIGHT)
            rect = (
                Rect(rect.x, top.y + top.height + 8, rect.width, rect.height - top.height - 8)
                if top.y < 40
                else (Rect(rect.x, rect.y, rect.width, top.y - 8 - rect.y))
            )
        assert_color(mean_rgb(picture, rect), COLORS[pane.id], f"layout {layout_id} pane {pane.id}")
    mask = outside_mask(layout_id)
    if mask.any():
        outside = picture[mask].reshape(-1, 3).mean(axis=0)
        assert_color(outside, rgb_from_color_int(BACKGROUND), f"layout {layout_id} background")


def test_picture_in_picture_small_pane_is_drawn_on_top(tmp_path: Path, clips: list[Path]) -> None:
    out = render(tmp_path, clips[:2], "--layout-ids", "3", "--duration", "0.4")
    picture = rgb(decode_video(out)[-1])
    small = pane_rect(system_layout(3).panes[1], WIDTH, HEIGHT)
    assert_color(mean_rgb(picture, small), COLORS[1], "pane 1 (zorder 1) over pane 0")


@pytest.mark.parametrize(("crop_mode", "bars"), [(1, False), (2, True)])
def test_crop_fills_and_pad_shows_background_bars(
    tmp_path: Path, clip_4x3: Path, crop_mode: int, bars: bool
) -> None:
    out = render(
        tmp_path,
        [clip_4x3],
        "--layout-ids",
        "1",
        "--duration",
        "0.4",
        "--crop-mode",
        str(crop_mode),
        "--background-color",
        str(BACKGROUND),
    )
    picture = rgb(decode_video(out)[-1])
    # A 4:3 picture fitted into 640x360 is 480x360: bars of 80 px on both sides when padded.
    centre = Rect(80, 0, 480, 360)
    left, right = Rect(0, 0, 80, 360), Rect(560, 0, 80, 360)
    assert_color(mean_rgb(picture, centre), COLORS[0], "centre")
    expected_side = rgb_from_color_int(BACKGROUND) if bars else COLORS[0]
    assert_color(mean_rgb(picture, left), expected_side, "left side")
    assert_color(mean_rgb(picture, right), expected_side, "right side")


def test_every_users_tone_is_in_the_mix(tmp_path: Path, clips: list[Path]) -> None:
    out = render(tmp_path, clips[:4], "--layout-ids", "6", "--duration", "3")
    samples, rate = decode_audio(out)
    assert rate == 48000
    assert samples.shape[0] == 2
    levels = [tone_level_db(samples[:, 48000:], rate, f) for f in TONES[:4]]
    absent = [tone_level_db(samples[:, 48000:], rate, f) for f in TONES[4:]]
    # Each tone is written at 0.3 of full scale (about -10.5 dB); mixing keeps it well above -20 dB.
    assert min(levels) > -20, levels
    assert max(absent) < min(levels) - 40, (levels, absent)


def test_a_user_beyond_audio_mix_count_is_not_heard(tmp_path: Path, clips: list[Path]) -> None:
    layout = tmp_path / "two_voices.json"
    layout.write_text(
        '{"id": 100, "name": "three panes, two voices", "audio_mix_count": 2, "panes": ['
        '{"id": 0, "x": 0, "y": 0, "width": 0.33, "height": 1},'
        '{"id": 1, "x": 0.33, "y": 0, "width": 0.33, "height": 1},'
        '{"id": 2, "x": 0.66, "y": 0, "width": 0.34, "height": 1}]}'
    )
    out = render(tmp_path, clips[:3], "--layout-file", str(layout), "--layout-ids", "100", "--duration", "2")
    samples, rate = decode_audio(out)
    heard = [tone_level_db(samples[:, 24000:], rate, f) for f in TONES[:3]]
    # Equal loudness: the two earliest users are mixed, the third (latest to join) is not.
    assert min(heard[:2]) > -20, heard
    assert heard[2] < min(heard[:2]) - 40, heard


def test_timing_frame_count_pts_keyframes_and_av_start(tmp_path: Path, clips: list[Path]) -> None:
    duration = 5
    out = render(tmp_path, clips[:2], "--layout-ids", "2", "--duration", str(duration))
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        # (kind, pts in seconds, keyframe), read while the container is open
        packets = [
            (p.stream.type, float(p.pts * p.time_base), p.is_keyframe)
            for p in container.demux()
            if p.pts is not None
        ]
    vpk = [p for p in packets if p[0] == "video"]
    apk = [p for p in packets if p[0] == "audio"]
    assert abs(len(vpk) - duration * FPS) <= 1
    vpts = [p[1] for p in vpk]
    assert all(b > a for a, b in itertools.pairwise(vpts)), "video pts must strictly increase"
    apts = [p[1] for p in apk]
    assert all(b > a for a, b in itertools.pairwise(apts)), "audio pts must strictly increase"
    keyframes = [i for i, p in enumerate(vpk) if p[2]]
    assert keyframes == list(range(0, len(vpk), 2 * FPS)), keyframes
    assert abs(vpts[0] - apts[0]) <= 0.040, (vpts[0], apts[0])
    assert abs((vpts[-1] - vpts[0]) - (duration - 1 / FPS)) <= 0.040
    assert abs(apts[-1] - duration) <= 0.1


def test_an_input_that_ends_leaves_background_and_the_frame_rate(tmp_path: Path, clips: list[Path]) -> None:
    short = tmp_path / "short.mp4"
    from tests.media import write_test_clip

    write_test_clip(short, color=COLORS[1], tone_hz=TONES[1], seconds=1.0)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    out = render(
        tmp_path,
        [clips[0], short, corrupt],
        "--layout-ids",
        "5",
        "--duration",
        "2",
        "--background-color",
        str(BACKGROUND),
    )
    frames = decode_video(out)
    assert len(frames) == 2 * FPS
    first, last = rgb(frames[5]), rgb(frames[-1])
    panes = [pane_rect(p, WIDTH, HEIGHT) for p in system_layout(5).panes]
    background = rgb_from_color_int(BACKGROUND)
    assert_color(mean_rgb(first, panes[1]), COLORS[1], "short input while it plays")
    # Its last picture (stamped 14/15 s) stays up until the clock reaches the end of the file at 1 s.
    assert_color(mean_rgb(rgb(frames[FPS - 1]), panes[1]), COLORS[1], "short input's last picture")
    assert_color(mean_rgb(rgb(frames[FPS]), panes[1]), background, "short input at its end")
    assert_color(mean_rgb(last, panes[1]), background, "short input after it ended")
    assert_color(mean_rgb(first, panes[2]), background, "corrupt input")
    assert_color(mean_rgb(last, panes[0]), COLORS[0], "input that keeps playing")


def test_the_first_output_frame_already_shows_the_users_picture(tmp_path: Path, clips: list[Path]) -> None:
    # A picture stamped exactly at a tick (the input's first, at 0 s) is shown at that tick, not the next.
    out = render(
        tmp_path,
        clips[:4],
        "--offline",
        "--layout-ids",
        "6",
        "--duration",
        "1",
        "--background-color",
        str(BACKGROUND),
    )
    frames = decode_video(out)
    assert len(frames) == FPS
    panes = [pane_rect(p, WIDTH, HEIGHT) for p in system_layout(6).panes]
    for index in (0, 1, FPS - 1):
        picture = rgb(frames[index])
        for pane in system_layout(6).panes:
            rect = fit(320, 180, panes[pane.id], CropMode.PAD).target
            assert_color(mean_rgb(picture, rect), COLORS[pane.id], f"frame {index} pane {pane.id}")


@pytest.mark.parametrize(("input_fps", "switch_at"), [(FPS, 7), (FPS, 16), (2 * FPS, 11)])
def test_a_picture_change_is_shown_at_the_first_tick_at_or_after_it(
    tmp_path: Path, input_fps: int, switch_at: int
) -> None:
    # Pictures must not wait behind audio decoded after them, nor behind the decoder's reordering delay.
    first, second = COLORS[2], COLORS[3]
    clip = write_switching_clip(tmp_path / "switch.mp4", first, second, switch_at, 2 * input_fps, input_fps)
    out = render(
        tmp_path,
        [clip],
        "--offline",
        "--layout-ids",
        "1",
        "--duration",
        "1.6",
        "--background-color",
        str(BACKGROUND),
    )
    frames = decode_video(out)
    assert len(frames) == round(1.6 * FPS)
    # Output frame n (at n / FPS s) shows the latest input picture stamped at or before it.
    expected_switch = math.ceil(switch_at * FPS / input_fps)
    whole = Rect(0, 0, WIDTH, HEIGHT)
    candidates = {"first": first, "second": second, "background": rgb_from_color_int(BACKGROUND)}
    seen = [nearest_color(mean_rgb(rgb(f), whole), candidates) for f in frames]
    assert seen == ["first"] * expected_switch + ["second"] * (len(frames) - expected_switch), seen
    assert_color(mean_rgb(rgb(frames[expected_switch]), whole), second, "the first frame after the switch")
    assert_color(mean_rgb(rgb(frames[expected_switch - 1]), whole), first, "the last frame before it")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layout-ids", "12"], "InvalidLayoutID.Malformed"),
        (["--layout-ids", "3,4"], "InvalidLayoutID.Malformed"),
        (["--media-encode", "30", "--task-profile", "4IN_720P"], "InvalidMediaEncode.Malformed"),
        (["--media-encode", "2"], "InvalidMediaEncode.Malformed"),
        (["--background-color", "16777216"], "InvalidBackgroundColor.Malformed"),
        (["--crop-mode", "3"], "InvalidParameter"),
        (["--layout-ids", "11", "--task-profile", "4IN_720P"], "InvalidLayoutID.Malformed"),
    ],
)
def test_bad_spec_is_refused_with_a_code_before_anything_starts(
    tmp_path: Path, clips: list[Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "never.flv"
    code = main(["render", "--output", str(out), "--duration", "1", *args, str(clips[0])])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "output",
    [
        "file:/tmp/x.flv",
        "concat:a.flv|b.flv",
        "tcp://127.0.0.1:1/x",
        "http://example.com/live/x",
        "rtmp://",
        "rtmp://host/onlyapp",
        "out.txt",
    ],
)
def test_outputs_that_are_not_rtmp_or_a_media_file_are_refused(
    clips: list[Path], capsys: pytest.CaptureFixture[str], output: str
) -> None:
    code = main(["render", "--output", output, "--duration", "1", str(clips[0])])
    assert code == 2
    err = capsys.readouterr().err
    assert "InvalidStreamURL.Malformed" in err or "InvalidParameter" in err


def test_media_encode_0_is_audio_only(tmp_path: Path, clips: list[Path]) -> None:
    out = render(tmp_path, clips[:2], "--media-encode", "0", "--duration", "2", name="audio.flv")
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["audio"]
        assert container.streams.audio[0].rate == 48000
    samples, rate = decode_audio(out)
    heard = [tone_level_db(samples[:, 24000:], rate, f) for f in TONES[:3]]
    assert min(heard[:2]) > -20 and heard[2] < -60, heard
