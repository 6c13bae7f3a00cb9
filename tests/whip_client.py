"""A WHIP publisher nobody here wrote: FFmpeg 8's ``whip`` muxer (inside the PyAV wheel), publishing a
solid colour (H.264 baseline, 320x240, 30 fps) and a tone (Opus, 48 kHz stereo).

Run it in its own process (``python -m tests.whip_client URL ...``, or :func:`start`): PyAV holds
the GIL while the muxer makes its HTTP POST, so it must never run in the process that serves the
endpoint. It publishes until ``--seconds`` pass or SIGTERM/SIGINT, then closes the muxer, which
``DELETE``s the resource.

FFmpeg's WHIP muxer completes DTLS with Janus 1.1 only with a P-256 certificate (its own GnuTLS
certificate makes Janus' OpenSSL abort with "wrong curve"): :func:`write_p256_certificate` makes one.
"""

from __future__ import annotations

import argparse
import datetime
import fractions
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

#: The picture's colour (RGB) and the tone's frequency (Hz).
COLOR = (200, 30, 30)
TONE_HZ = 440.0

#: An offer as FFmpeg's WHIP muxer sends it (Opus; H.264 with RTX; recorded), for requests whose media
#: never flows.
OFFER = "\r\n".join(
    [
        "v=0",
        "o=FFmpeg 4489045141692799359 2 IN IP4 127.0.0.1",
        "s=FFmpegPublishSession",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:4e9ecf42",
        "a=ice-pwd:cc801f18c1dd16e0394627fce0f33644",
        "a=fingerprint:sha-256 31:E8:89:B3:C4:88:F9:8E:BF:A1:BC:2C:D6:28:15:85:ED:77:A7:92:0C:5B:0E:8F:9C:A5:"
        "D4:64:BA:E9:FC:93",
        "a=setup:passive",
        "a=mid:0",
        "a=sendonly",
        "a=msid:FFmpeg audio",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=ssrc:1291515628 cname:FFmpeg",
        "m=video 9 UDP/TLS/RTP/SAVPF 106 105",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:4e9ecf42",
        "a=ice-pwd:cc801f18c1dd16e0394627fce0f33644",
        "a=fingerprint:sha-256 31:E8:89:B3:C4:88:F9:8E:BF:A1:BC:2C:D6:28:15:85:ED:77:A7:92:0C:5B:0E:8F:9C:A5:"
        "D4:64:BA:E9:FC:93",
        "a=setup:passive",
        "a=mid:1",
        "a=sendonly",
        "a=msid:FFmpeg video",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:106 H264/90000",
        "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=rtcp-fb:106 nack",
        "a=rtpmap:105 rtx/90000",
        "a=fmtp:105 apt=106",
        "a=ssrc-group:FID 1291515629 1291515630",
        "a=ssrc:1291515629 cname:FFmpeg",
        "",
    ]
)


def write_p256_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate and its key in ``folder``; returns (certificate, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whip")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "whip-cert.pem", folder / "whip-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def start(
    url: str, token: str | None, cert: Path, key: Path, seconds: float = 30.0
) -> subprocess.Popen[bytes]:
    """Start the publisher in a child process (stdout and stderr: its log, FFmpeg's included)."""
    command = [sys.executable, "-m", "tests.whip_client", url, "--cert", str(cert), "--key", str(key)]
    command += ["--seconds", str(seconds)]
    if token is not None:
        command += ["--token", token]
    return subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def publish(url: str, token: str | None, cert: Path, key: Path, seconds: float) -> None:
    """Publish until ``seconds`` pass or a signal arrives (see the module docstring).

    Raises:
        av.error.FFmpegError: the WHIP POST was refused or the connection failed.
    """
    import av
    import numpy as np

    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    options = {"cert_file": str(cert), "key_file": str(key)}
    if token is not None:
        options["authorization"] = token
    output = av.open(url, "w", format="whip", options=options)  # the POST happens at the first packet
    video = output.add_stream(
        "libx264",
        rate=30,
        options={"profile": "baseline", "tune": "zerolatency", "preset": "ultrafast", "bf": "0", "g": "30"},
    )
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    audio = output.add_stream("libopus", rate=48000, layout="stereo")
    picture = np.empty((240, 320, 3), np.uint8)
    picture[:] = COLOR
    frame_count = 0
    samples = 0
    posted = False

    def mux(packet: av.Packet[Any]) -> None:
        nonlocal posted
        if not posted:  # the first packet makes the muxer POST the offer (then ICE and DTLS)
            print(f"whip_client: POST at monotonic {time.monotonic():.3f}", flush=True)
            posted = True
        output.mux(packet)

    begin = time.monotonic()
    while not stop and time.monotonic() - begin < seconds:
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = frame_count
        frame.time_base = fractions.Fraction(1, 30)
        for packet in video.encode(frame):
            mux(packet)
        while samples < (frame_count + 1) * 1600:
            t = (np.arange(960) + samples) / 48000
            # Packed stereo ("flt"): samples interleaved left, right, left...
            tone = (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
            block = av.AudioFrame.from_ndarray(
                np.stack([tone, tone], axis=1).reshape(1, -1), format="flt", layout="stereo"
            )
            block.sample_rate = 48000
            block.pts = samples
            block.time_base = fractions.Fraction(1, 48000)
            for packet in audio.encode(block):
                mux(packet)
            samples += 960
        frame_count += 1
        time.sleep(max(0.0, begin + frame_count / 30 - time.monotonic()))
    output.close()
    print("whip_client: closed", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    try:
        publish(args.url, args.token, args.cert, args.key, args.seconds)
    except Exception as exc:
        print(f"whip_client: {exc.__class__.__name__}: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
