"""rtc_mpu.mixer.overlays.images: fetching overlay images with limits and an address policy, against a local
aiohttp server.

Every test starts its own web server on a free loopback port and counts the requests it gets, so a refused
URL can be shown to have made no request. No test needs the internet: refused public-looking and private
addresses are refused before any connection is attempted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import struct
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from io import BytesIO

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image

from rtc_mpu.mixer.overlays import images
from rtc_mpu.mixer.overlays.images import (
    BlockedAddressError,
    FetchLimits,
    ImageCache,
    ImageError,
    PublicAddressResolver,
    fetch_image,
    is_public_address,
    make_session,
    redact_image_url,
)

LOCAL = FetchLimits(allow_private=True)
SECRET = "sig=SECRET123"
#: The PNG's pixels, (row, column) -> straight RGBA.
PNG_PIXELS = {
    (0, 0): (255, 0, 0, 128),
    (0, 1): (0, 255, 0, 0),
    (0, 2): (10, 200, 30, 64),
    (1, 0): (0, 0, 255, 255),
}
JPEG_COLOR = (200, 30, 30)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- test images, made in memory ---------------------------------------------------------------------


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


@functools.cache
def png_rgba() -> bytes:
    """A 4x2 RGBA PNG with the alpha values of PNG_PIXELS (other pixels opaque white)."""
    image = Image.new("RGBA", (4, 2), (255, 255, 255, 255))
    for (row, column), rgba in PNG_PIXELS.items():
        image.putpixel((column, row), rgba)
    return _save(image, "PNG")


@functools.cache
def jpeg() -> bytes:
    return _save(Image.new("RGB", (16, 16), JPEG_COLOR), "JPEG", quality=95)


@functools.cache
def gif_animated() -> bytes:
    """Two 8x8 frames: red, then blue."""
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    return _save(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)


@functools.cache
def png_grey16() -> bytes:
    image = Image.new("I;16", (2, 1))
    image.putpixel((0, 0), 65535)
    image.putpixel((1, 0), 32768)
    return _save(image, "PNG")


@functools.cache
def tiff() -> bytes:
    return _save(Image.new("RGB", (4, 4), (1, 2, 3)), "TIFF")


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height black pixels, compressed to a few KB.

    Written by hand, streaming the all-zero scanlines through zlib, so the test never holds the pixels.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    remaining = ((width + 7) // 8 + 1) * height  # filter byte (0) + packed bits (0) per row
    block = bytes(1 << 20)
    parts = []
    while remaining > 0:
        size = min(remaining, len(block))
        parts.append(compressor.compress(block[:size]))
        remaining -= size
    parts.append(compressor.flush())
    idat = b"".join(parts)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- the local server ---------------------------------------------------------------------------------


@dataclass
class Server:
    """The running test server: its base URL and the requests it got, by path."""

    base: str
    port: int
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def total(self) -> int:
        return sum(self.hits.values())


def _bytes(data: bytes, content_type: str) -> web.Response:
    return web.Response(body=data, content_type=content_type)


def _routes(server: Server) -> list[web.RouteDef]:
    async def png(request: web.Request) -> web.StreamResponse:
        return _bytes(png_rgba(), "image/png")

    async def delayed_png(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return _bytes(png_rgba(), "image/png")

    async def redirect(request: web.Request) -> web.StreamResponse:
        hops = int(request.match_info["hops"])
        if hops == 0:
            return _bytes(png_rgba(), "image/png")
        raise web.HTTPFound(f"/redirect/{hops - 1}")  # relative Location

    async def go(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query["to"])

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3)
        return _bytes(png_rgba(), "image/png")

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for byte in png_rgba():
                await response.write(bytes([byte]))
                await asyncio.sleep(0.1)
        return response

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(32):  # 2 MiB
                await response.write(bytes(64 * 1024))
            await response.write_eof()
        return response

    async def big_length(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = 100 * 1024 * 1024
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(bytes(64 * 1024))
            await asyncio.sleep(3)  # never sends the rest: reading the body would time out
        return response

    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html><body>not an image</body></html>", content_type="text/html")

    def static(data: Callable[[], bytes], content_type: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return _bytes(data(), content_type)

        return handler

    return [
        web.get("/png", png),
        web.get("/delayed-png", delayed_png),
        web.get("/jpeg", static(jpeg, "image/jpeg")),
        web.get("/gif", static(gif_animated, "image/gif")),
        web.get("/grey16", static(png_grey16, "image/png")),
        web.get("/tiff", static(tiff, "image/tiff")),
        web.get("/bomb", static(lambda: png_bomb(20000, 20000), "image/png")),
        web.get("/bomb10k", static(lambda: png_bomb(10000, 10000), "image/png")),
        web.get("/big5k", static(lambda: png_bomb(5000, 5000), "image/png")),
        web.get("/redirect/{hops}", redirect),
        web.get("/go", go),
        web.get("/slow", slow),
        web.get("/trickle", trickle),
        web.get("/chunked", chunked),
        web.get("/big-length", big_length),
        web.get("/html", html),
    ]


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[Server]:
    """A web server on a free loopback port, counting requests by path."""
    server = Server(base="", port=0)

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        server.hits[request.path] += 1
        return await handler(request)

    app = web.Application(middlewares=[count])
    app.add_routes(_routes(server))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{server.port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def run_with_server(body: Callable[[Server], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serve() as server:
            await body(server)

    asyncio.run(main())


async def refused(url: str, limits: FetchLimits = LOCAL, **kwargs: aiohttp.ClientSession) -> ImageError:
    """The ImageError that fetching ``url`` raises."""
    with pytest.raises(ImageError) as caught:
        await fetch_image(url, limits, **kwargs)
    return caught.value


class FakeResolver(AbstractResolver):
    """Resolves names from a table (host -> addresses); unknown names fail like getaddrinfo."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass


# --- decoding -----------------------------------------------------------------------------------------


def test_png_alpha_is_straight_and_preserved() -> None:
    async def body(server: Server) -> None:
        rgba = await fetch_image(server.url("/png"), LOCAL)
        assert rgba.shape == (2, 4, 4) and rgba.dtype == np.uint8
        for (row, column), expected in PNG_PIXELS.items():
            assert tuple(rgba[row, column]) == expected
        assert tuple(rgba[1, 3]) == (255, 255, 255, 255)
        assert not rgba.flags.writeable and rgba.flags.c_contiguous

    run_with_server(body)


def test_jpeg_is_opaque() -> None:
    async def body(server: Server) -> None:
        rgba = await fetch_image(server.url("/jpeg"), LOCAL)
        assert rgba.shape == (16, 16, 4)
        assert (rgba[..., 3] == 255).all()
        assert np.abs(rgba[..., :3].astype(int) - JPEG_COLOR).max() <= 8

    run_with_server(body)


def test_animated_gif_gives_its_first_frame() -> None:
    async def body(server: Server) -> None:
        rgba = await fetch_image(server.url("/gif"), LOCAL)
        assert rgba.shape == (8, 8, 4)
        assert (rgba.reshape(-1, 4) == (255, 0, 0, 255)).all()

    run_with_server(body)


def test_16_bit_grey_png_is_scaled_not_clipped() -> None:
    async def body(server: Server) -> None:
        rgba = await fetch_image(server.url("/grey16"), LOCAL)
        assert rgba.tolist() == [[[255, 255, 255, 255], [128, 128, 128, 255]]]

    run_with_server(body)


def test_what_is_not_an_allowed_image_format_is_refused() -> None:
    async def body(server: Server) -> None:
        assert (await refused(server.url("/html"))).reason == "not an image"
        assert (await refused(server.url("/tiff"))).reason == "not an image"  # not a web format

    run_with_server(body)


def test_pixel_limit_is_checked_on_the_header() -> None:
    assert len(png_bomb(20000, 20000)) < 100_000  # 4e8 pixels in a small file

    async def body(server: Server) -> None:
        error = await refused(server.url("/big5k"))
        assert error.reason == "image of 5000x5000 pixels exceeds 16777216"
        # Above Pillow's own limits (warning, then error): refused as well, never decoded.
        assert (await refused(server.url("/bomb10k"))).reason == "image exceeds 16777216 pixels"
        assert (await refused(server.url("/bomb"))).reason == "image exceeds 16777216 pixels"
        tight = FetchLimits(allow_private=True, max_pixels=7)
        assert (await refused(server.url("/png"), tight)).reason == "image of 4x2 pixels exceeds 7"

    run_with_server(body)


# --- HTTP limits ----------------------------------------------------------------------------------------


def test_http_errors() -> None:
    async def body(server: Server) -> None:
        assert (await refused(server.url("/missing"))).reason == "HTTP 404"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        error = await refused(f"http://127.0.0.1:{closed_port}/png")
        assert error.reason == "cannot connect (Connection refused)"
        error = await refused("http://no-such-host.invalid/png")
        assert error.reason == "cannot resolve host"

    run_with_server(body)


def test_redirects_are_followed_up_to_the_limit() -> None:
    async def body(server: Server) -> None:
        assert (await fetch_image(server.url("/redirect/1"), LOCAL)).shape == (2, 4, 4)
        assert (await fetch_image(server.url("/redirect/3"), LOCAL)).shape == (2, 4, 4)  # max_redirects=3
        absolute = server.url("/go?to=" + server.url("/png"))
        assert (await fetch_image(absolute, LOCAL)).shape == (2, 4, 4)
        server.hits.clear()
        assert (await refused(server.url("/redirect/5"))).reason == "too many redirects"
        assert server.total == 4  # the first request and 3 redirects, the 4th redirect not followed
        assert (await refused(server.url("/redirect/4"))).reason == "too many redirects"
        none = FetchLimits(allow_private=True, max_redirects=0)
        assert (await refused(server.url("/redirect/1"), none)).reason == "too many redirects"

    run_with_server(body)


def test_redirect_targets_must_be_http() -> None:
    async def body(server: Server) -> None:
        for target in ("ftp://127.0.0.1/x.png", "file:///etc/passwd", "data:image/png;base64,AAAA"):
            error = await refused(server.url(f"/go?to={target}"))
            assert error.reason == "scheme must be http or https"

    run_with_server(body)


def test_timeout_covers_headers_and_body() -> None:
    async def body(server: Server) -> None:
        short = FetchLimits(allow_private=True, timeout=0.5)
        for path in ("/slow", "/trickle"):
            started = time.monotonic()
            assert (await refused(server.url(path), short)).reason == "timed out after 0.5 s"
            # One limit for the whole fetch, not per read: /trickle sends a byte every 0.1 s for 7 s.
            assert time.monotonic() - started < 2.5

    run_with_server(body)


def test_byte_limit_by_content_length_and_while_reading() -> None:
    async def body(server: Server) -> None:
        small = FetchLimits(allow_private=True, max_bytes=200_000)
        assert (await refused(server.url("/chunked"), small)).reason == "larger than 200000 bytes"
        # Refused by the header: reading the body would wait for bytes that never come (then time out).
        assert (await refused(server.url("/big-length"))).reason == "larger than 5242880 bytes"

    run_with_server(body)


def test_chunked_body_has_no_content_length() -> None:
    async def body(server: Server) -> None:
        async with aiohttp.ClientSession() as session, session.get(server.url("/chunked")) as response:
            assert response.content_length is None
            assert len(await response.read()) == 2 * 1024 * 1024

    run_with_server(body)


# --- the address policy -------------------------------------------------------------------------------


PRIVATE_ADDRESSES = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fd00::1",
    "fe80::1",
    "fe80::1%eth0",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",
    "2002:7f00:1::1",
    "not an address",
]


@pytest.mark.parametrize("address", PRIVATE_ADDRESSES)
def test_private_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(address)


def test_resolver_drops_private_addresses() -> None:
    table = {
        "mixed.test": ["10.0.0.1", "8.8.8.8", "::1", "2606:4700:4700::1111", "::ffff:127.0.0.1"],
        "private.test": ["127.0.0.1", "::1"],
    }

    async def main() -> None:
        resolver = PublicAddressResolver(inner=FakeResolver(table))
        kept = [r["host"] for r in await resolver.resolve("mixed.test", 80, socket.AF_UNSPEC)]
        assert kept == ["8.8.8.8", "2606:4700:4700::1111"]
        with pytest.raises(BlockedAddressError) as caught:
            await resolver.resolve("private.test", 80)
        assert caught.value.addresses == ["127.0.0.1", "::1"]
        with pytest.raises(socket.gaierror):
            await resolver.resolve("unknown.test", 80)
        everything = PublicAddressResolver(allow_private=True, inner=FakeResolver(table))
        assert len(await everything.resolve("private.test", 80)) == 2

    asyncio.run(main())


def test_private_and_loopback_urls_are_refused_without_a_connection() -> None:
    async def body(server: Server) -> None:
        strict = FetchLimits()
        port = server.port
        literal = {
            server.url("/png"): "127.0.0.1",
            "http://127.0.0.1/": "127.0.0.1",
            f"http://[::1]:{port}/png": "::1",
            "http://[::1]/": "::1",
            "http://10.0.0.1/": "10.0.0.1",
            "http://169.254.169.254/latest/meta-data": "169.254.169.254",
            f"http://[::ffff:127.0.0.1]:{port}/png": "::ffff:7f00:1",
            "http://100.64.0.1/": "100.64.0.1",
            "http://[fd12::1]/": "fd12::1",
            "http://0.0.0.0/": "0.0.0.0",
        }
        for url, address in literal.items():
            error = await refused(url, strict)
            assert error.reason == f"address {address} is private or loopback", url
        # Legacy numeric forms socket would map to 127.0.0.1 are not taken for names.
        for url in (
            f"http://127.1:{port}/png",
            f"http://2130706433:{port}/png",
            f"http://127.0.0.1.:{port}/",
        ):
            assert (await refused(url, strict)).reason == "invalid IP address", url
        # Names go through the resolver, which keeps no address here.
        error = await refused(f"http://localhost:{port}/png", strict)
        assert error.reason == "host localhost resolves only to private or loopback addresses"
        hex_form = await refused(f"http://0x7f000001:{port}/png", strict)
        assert hex_form.reason in {
            "host 0x7f000001 resolves only to private or loopback addresses",
            "cannot resolve host",
        }
        assert server.total == 0

    run_with_server(body)


def test_other_schemes_are_refused() -> None:
    async def main() -> None:
        for url in ("ftp://example.com/a.png", "file:///etc/passwd", "gopher://x/", "data:,x", "//x/a.png"):
            assert (await refused(url, FetchLimits())).reason == "scheme must be http or https", url
        assert (await refused("http:///a.png", FetchLimits())).reason == "URL has no host"

    asyncio.run(main())


def test_redirects_to_private_addresses_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 127.0.0.1 (only) taken for public, a public server that redirects to private places."""
    real = images.is_public_address

    def public_or_test_server(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return str(address) == "127.0.0.1" or real(address)

    monkeypatch.setattr(images, "is_public_address", public_or_test_server)
    strict = FetchLimits()
    names = {
        "public.test": ["127.0.0.1"],
        "private.test": ["127.0.0.2"],
        "mixed.test": ["127.0.0.2", "127.0.0.1"],
    }

    async def body(server: Server) -> None:
        port = server.port
        assert (await fetch_image(server.url("/png"), strict)).shape == (2, 4, 4)  # the patch works
        for target, address in (
            (f"http://127.0.0.2:{port}/png", "127.0.0.2"),
            (f"http://[::1]:{port}/png", "::1"),
            ("http://10.0.0.1/", "10.0.0.1"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ):
            error = await refused(server.url(f"/go?to={target}"), strict)
            assert error.reason == f"address {address} is private or loopback"
        # A listener on 127.0.0.2 at the same port: the address the resolver must drop.
        connections = 0

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            writer.close()

        trap = await asyncio.start_server(on_connect, "127.0.0.2", port)
        session = make_session(strict, inner_resolver=FakeResolver(names))
        try:
            hop = f"http://public.test:{port}/go?to=http://private.test:{port}/png"
            error = await refused(hop, strict, session=session)
            assert error.reason == "host private.test resolves only to private or loopback addresses"
            # A name with a public and a private address: only the public one is connected to.
            mixed = f"http://public.test:{port}/go?to=http://mixed.test:{port}/png"
            assert (await fetch_image(mixed, strict, session)).shape == (2, 4, 4)
        finally:
            await session.close()
            trap.close()
            await trap.wait_closed()
        assert server.hits == Counter({"/png": 2, "/go": 6})
        assert connections == 0

    run_with_server(body)


def test_sessions_must_come_from_make_session() -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(ValueError, match="make_session"):
                await fetch_image("http://example.com/a.png", FetchLimits(), plain)
        permissive = make_session(LOCAL)
        try:
            with pytest.raises(ValueError, match="private"):
                await fetch_image("http://example.com/a.png", FetchLimits(), permissive)
        finally:
            await permissive.close()

    asyncio.run(main())


# --- redaction ------------------------------------------------------------------------------------------


def test_redact_image_url() -> None:
    assert redact_image_url("https://u:pw@cdn.example.com:8443/a/wm.png?sig=x#frag") == (
        "https://cdn.example.com:8443/a/wm.png"
    )
    assert redact_image_url("http://[::1]:8080/x.png?t=1") == "http://[::1]:8080/x.png"
    long = redact_image_url("http://h/" + "p" * 200 + "?q=1")
    assert long == "http://h/" + "p" * 76 + "..." and len(long) - len("http://h") == 80
    assert redact_image_url("http://h:99999/") == "<invalid url>"
    assert redact_image_url("http://h/a\nb\x00c?x") == "http://h/abc"


def test_errors_never_hold_the_query_string(caplog: pytest.LogCaptureFixture) -> None:
    async def body(server: Server) -> None:
        urls = [
            server.url(f"/missing?{SECRET}"),
            server.url(f"/html?{SECRET}"),
            server.url(f"/redirect/9?{SECRET}"),
            server.url(f"/big-length?{SECRET}"),
            f"ftp://user:{SECRET}@example.com/a.png?{SECRET}#{SECRET}",
            f"http://localhost:{server.port}/png?{SECRET}",
            f"http://10.0.0.1/a.png?{SECRET}",
            f"http://no-such-host.invalid/png?{SECRET}",
        ]
        for url in urls:
            limits = FetchLimits() if "localhost" in url or "10.0.0.1" in url else LOCAL
            error = await refused(url, limits)
            assert "SECRET" not in error.reason and "SECRET" not in str(error) and "?" not in str(error)
            assert error.url == redact_image_url(url)
        cache = ImageCache(LOCAL)
        with pytest.raises(ImageError):
            await cache.get(server.url(f"/missing?{SECRET}"))
        await cache.close()

    with caplog.at_level(logging.DEBUG):
        run_with_server(body)
    assert "image http://127.0.0.1" in caplog.text and "HTTP 404" in caplog.text
    assert "SECRET" not in caplog.text


def test_image_error_pickles() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(ImageError("HTTP 404", f"http://h/p?{SECRET}")))
    assert (error.reason, error.url, str(error)) == ("HTTP 404", "http://h/p", "http://h/p: HTTP 404")


# --- the cache ------------------------------------------------------------------------------------------


def test_cache_fetches_each_url_once() -> None:
    async def body(server: Server) -> None:
        cache = ImageCache(LOCAL)
        try:
            first = await cache.get(server.url("/png"))
            second = await cache.get(server.url("/png"))
            assert first is second and server.hits["/png"] == 1
            together = await asyncio.gather(*(cache.get(server.url("/delayed-png")) for _ in range(5)))
            assert all(array is together[0] for array in together)
            assert server.hits["/delayed-png"] == 1
        finally:
            await cache.close()
        with pytest.raises(RuntimeError):
            await cache.get(server.url("/png"))

    run_with_server(body)


def test_cache_keeps_failures() -> None:
    async def body(server: Server) -> None:
        cache = ImageCache(LOCAL)
        try:
            errors = []
            for _ in range(2):
                with pytest.raises(ImageError) as caught:
                    await cache.get(server.url("/missing"))
                errors.append(caught.value)
            assert errors[0] is errors[1] and errors[0].reason == "HTTP 404"
            assert server.hits["/missing"] == 1
        finally:
            await cache.close()

    run_with_server(body)


def test_a_cancelled_caller_does_not_cancel_the_shared_download() -> None:
    async def body(server: Server) -> None:
        cache = ImageCache(LOCAL)
        try:
            impatient = asyncio.create_task(cache.get(server.url("/delayed-png")))
            await asyncio.sleep(0.05)
            impatient.cancel()
            rgba: npt.NDArray[np.uint8] = await cache.get(server.url("/delayed-png"))
            assert rgba.shape == (2, 4, 4) and server.hits["/delayed-png"] == 1
            assert impatient.cancelled()
        finally:
            await cache.close()

    run_with_server(body)


def test_close_cancels_downloads_under_way() -> None:
    async def body(server: Server) -> None:
        cache = ImageCache(LOCAL)
        waiting = asyncio.create_task(cache.get(server.url("/slow")))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await cache.close()
        assert time.monotonic() - started < 2.5  # not the 3 s the handler sleeps
        with pytest.raises(asyncio.CancelledError):
            await waiting

    run_with_server(body)
