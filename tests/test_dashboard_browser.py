"""The operator dashboard in a real browser: Debian's Chromium driven by Playwright (no browser download)
opens ``/dashboard/`` of the real service (the API and a Celery worker as processes, Redis, Janus and
nginx-rtmp, a publisher over WebRTC) with an operator key given on the 401 challenge; the page lists the
running task, its thumbnail changes, hls.js (installed from npm by ``make dashboard-js``) plays the task's
HLS output with an advancing currentTime, and the stop button ends the task. Screenshots go to the test's
tmp dir."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rtc_mpu.api.dashboard import HLS_JS, node_modules_dir
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.redis import Redis
from tests.service import ACCESS_KEY, SECRET, running_service, service_env
from tests.test_service_e2e import APP, publish

CHROMIUM = "/usr/bin/chromium"
#: The Redis database of this test's service (other service tests use 1-11).
DB = 13
TASK = "dash1"


@pytest.mark.timeout(240)
def test_the_dashboard_lists_plays_and_stops_a_running_task(
    redis_server: Redis, janus: Janus, nginx_rtmp: NginxRtmp, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    assert Path(CHROMIUM).exists(), "chromium is not installed: scripts/install-system-deps.sh test"
    assert (node_modules_dir() / HLS_JS).is_file(), "hls.js is not installed: make dashboard-js"
    url = f"{redis_server.url.rsplit('/', 1)[0]}/{DB}"
    web = f"http://{nginx_rtmp.host}:{nginx_rtmp.http_port}"
    env = service_env(
        url,
        janus.url,
        MPU_COOLDOWN="3",
        MPU_LEASE_SECONDS="3",
        MPU_HLS_DIR=str(nginx_rtmp.task_hls_dir),
        MPU_DASHBOARD_WEB_URL=web,
    )
    publisher = publish(janus, "dash", 1, 150)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with running_service(env, tmp_path) as service:
            time.sleep(1.0)
            status, task = service.call(
                "POST",
                f"/v1/apps/{APP}/tasks",
                {
                    "task_id": TASK,
                    "channel_id": "dash",
                    "layout_ids": [1],
                    "media_encode": 1,
                    # A clock, so that successive snapshots differ.
                    "clock_widgets": [{"x": 0.05, "y": 0.05, "font_size": 48, "box": 1}],
                    "outputs": [
                        {"kind": "rtmp", "url": nginx_rtmp.rtmp_url("dash1")},
                        {"kind": "hls", "segment_seconds": 1},
                        {"kind": "snapshot", "interval_seconds": 1},
                    ],
                },
            )
            assert status == 201, task
            service.wait_task(APP, TASK, lambda t: t["status"] == 1, 40)

            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"]
                )
                try:
                    # Without credentials: a Basic challenge (headless Chromium shows no dialog, so
                    # the page's own load fails; the context's request API sees the answer).
                    anonymous = browser.new_context()
                    refused = anonymous.request.get(f"{service.base}/dashboard/")
                    assert refused.status == 401, refused.status
                    assert refused.headers["www-authenticate"].startswith("Basic ")
                    anonymous.close()
                    context = browser.new_context(
                        http_credentials={"username": ACCESS_KEY, "password": SECRET},
                        viewport={"width": 1400, "height": 1000},
                    )
                    page = context.new_page()
                    console: list[str] = []
                    page.on("console", lambda message: console.append(message.text))
                    page.on("dialog", lambda dialog: dialog.accept())
                    page.goto(f"{service.base}/dashboard/")
                    section = page.locator(f'section[data-task="{APP}/{TASK}"]')
                    expect = sync_api.expect
                    expect(section.locator(".f-state")).to_contain_text("running", timeout=30_000)
                    expect(section.locator(".f-channel")).to_have_text("dash")
                    expect(section.locator(".f-users")).to_contain_text("user1", timeout=10_000)
                    expect(section.locator(".watch")).to_have_text("no rtc output (WebRTC watch page)")
                    expect(section.locator("a.hls-link")).to_have_attribute(
                        "href", f"{web}/hls/{APP}/{TASK}/index.m3u8"
                    )
                    expect(page.locator("#nodes tbody tr")).to_have_count(1, timeout=10_000)
                    expect(page.locator("#nodes tbody")).to_contain_text(f"{APP}/{TASK}")

                    # The thumbnail: the task's snapshot, reloaded at each poll, changes over time.
                    image = section.locator("img.snapshot")
                    page.wait_for_function(
                        "el => el.complete && el.naturalWidth > 0", arg=image.element_handle(), timeout=20_000
                    )
                    first = image.screenshot(path=str(shots / "thumbnail-1.png"))
                    changed = False
                    for attempt in range(20):
                        time.sleep(1.0)
                        later = image.screenshot(path=str(shots / f"thumbnail-{attempt + 2}.png"))
                        if later != first:
                            changed = True
                            break
                    assert changed, "the thumbnail never changed"

                    # The HLS player (hls.js, same-origin through the API) advances.
                    video = section.locator("video.hls")
                    page.wait_for_function(
                        "el => el.currentTime > 0.5", arg=video.element_handle(), timeout=40_000
                    )
                    before = float(video.evaluate("el => el.currentTime"))
                    time.sleep(3.0)
                    after = float(video.evaluate("el => el.currentTime"))
                    assert after > before + 1.0, (before, after, console[-10:])
                    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

                    # The layout button (a same-origin POST with the CSRF token) changes the task's layouts.
                    section.locator("input.layout").fill("2")
                    section.locator("button.set-layout").click()
                    expect(section.locator(".f-layout")).to_contain_text("of [2]", timeout=10_000)
                    assert service.call("GET", f"/v1/apps/{APP}/tasks/{TASK}")[1]["layout_ids"] == [2]

                    # The stop button ends the task; the page drops it.
                    section.locator("button.stop").click()
                    service.wait_task(APP, TASK, lambda t: t["state"] == "ended", 30)
                    expect(section).to_have_count(0, timeout=10_000)
                    page.screenshot(path=str(shots / "dashboard-after-stop.png"), full_page=True)
                finally:
                    browser.close()
    finally:
        publisher.kill()
        publisher.wait(timeout=10)
    assert (shots / "dashboard.png").stat().st_size > 0
