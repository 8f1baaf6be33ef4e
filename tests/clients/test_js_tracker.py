"""The browser tracker (`clients/js-tracker`) and its demo storefront in a real headless chromium (Debian's),
against a real gateway and a real JWT-protected server.

The page is served from its own origin (the gateway allows it by CORS) with a user-bound token; the test clicks
products as a person would and checks what the page shows and what the server holds: the recommendations follow
the clicks, a batch that failed (the gateway down) is sent again with the same event ids, and what is queued
when the page goes away is still delivered (fetch keepalive on page hide).
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from clients.client import AisleClient, ClientOptions
from clients.tokens import PrivateKey, mint
from loadtest.harness.gateway import GatewayProcess
from loadtest.harness.server import ServerProcess
from loadtest.harness.services.browser import headless_chromium
from protos.aisle.v1 import events_pb2
from tests.shop import BASE_TS, Shop, item, unique, view

TRACKER_DIR = Path(__file__).resolve().parents[2] / "clients" / "js-tracker"
WAIT_S = 30.0


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def static_origin() -> Iterator[str]:
    """clients/js-tracker served over HTTP on a port of its own: the storefront's origin."""
    handler = functools.partial(_Quiet, directory=str(TRACKER_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def gateway(
    auth_server: ServerProcess, static_origin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        tmp_path_factory.mktemp("tracker-gateway"), auth_server.target, args=["--cors-origin", static_origin]
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin(key: PrivateKey, auth_server: ServerProcess) -> Iterator[AisleClient]:
    with AisleClient(
        ClientOptions(target=auth_server.target, token=mint(key, ["admin"]), read_timeout_s=10)
    ) as client:
        yield client


@pytest.fixture(scope="module")
def shop(admin: AisleClient) -> Shop:
    """Books b0..b3 and shoes s0..s3; other customers viewed b0, b1, b2 together and s0, s1, s2 together."""
    shop = Shop()
    admin.upsert_items(
        [item(shop.id(f"b{n}"), category=shop.category("books"), brand="pages") for n in range(4)]
        + [item(shop.id(f"s{n}"), category=shop.category("shoes"), brand="soles") for n in range(4)]
    )
    for group in ("b", "s"):
        reader = unique("reader")
        admin.track([view(reader, shop.id(f"{group}{n}"), ts_ms=BASE_TS + n * 1000) for n in range(3)])
    return shop


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with headless_chromium(tmp_path / "profile") as driver:
        yield driver


def _until(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, message=what)


def _shown(driver: Any) -> tuple[str, list[str]]:
    """The recommendation id and the item ids the page shows (read in one script: the list is re-rendered)."""
    shown = driver.execute_script(
        "const list = document.getElementById('recommendations');"
        "return [list.dataset.recommendationId || '',"
        "        Array.from(list.querySelectorAll('li.card'), (li) => li.dataset.itemId)];"
    )
    return shown[0], list(shown[1])


def _click_product(driver: Any, item_id: str, css: str = "button.open") -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'#products li[data-item-id="{item_id}"] {css}').click()


def _open_storefront(
    driver: Any,
    static_origin: str,
    gateway: GatewayProcess,
    key: PrivateKey,
    user: str,
    shop: Shop,
    **extra: str,
) -> None:
    token = mint(key, ["events:write", "recommendations:read"], subject="storefront", user=user)
    products = ",".join(shop.id(f"{g}{n}") for g in "bs" for n in range(4))
    query = urlencode({"api": gateway.url, "token": token, "user": user, "items": products, **extra})
    driver.get(f"{static_origin}/demo/index.html?{query}")
    _until(driver, lambda d: _shown(d)[0], "the first recommendations")


def _recent(admin: AisleClient, user: str) -> list[tuple[int, str]]:
    return [(i.type, i.item_id) for i in admin.profile(user).recent]


def test_clicking_products_changes_the_recommendations(
    browser: Any, static_origin: str, gateway: GatewayProcess, key: PrivateKey, admin: AisleClient, shop: Shop
) -> None:
    user = unique("shopper")
    _open_storefront(browser, static_origin, gateway, key, user, shop, flush_ms="60000")
    first_id, first = _shown(browser)
    assert len(first) == 4

    _click_product(browser, shop.id("b0"))
    _until(browser, lambda d: _shown(d)[0] not in ("", first_id), "recommendations after clicking b0")
    after_book_id, after_book = _shown(browser)
    assert {shop.id("b1"), shop.id("b2")} <= set(after_book)  # co-viewed with b0
    assert shop.id("b0") not in after_book  # the item just clicked
    assert (events_pb2.CLICK, shop.id("b0")) in _recent(admin, user)

    _click_product(browser, shop.id("s0"))
    _until(browser, lambda d: _shown(d)[0] not in ("", after_book_id), "recommendations after clicking s0")
    _, after_shoe = _shown(browser)
    assert {shop.id("s1"), shop.id("s2")} <= set(after_shoe) and after_shoe != after_book
    recent = _recent(admin, user)
    assert recent[:2] == [(events_pb2.VIEW, shop.id("s0")), (events_pb2.CLICK, shop.id("s0"))]
    # two clicks and two views, and the impressions of the two answers shown before them, sent with the clicks'
    # batches (the impression of the answer on screen now waits in the queue)
    assert admin.profile(user).events_applied == 6


def test_a_failed_batch_is_sent_again_with_the_same_event_ids(
    browser: Any, static_origin: str, gateway: GatewayProcess, key: PrivateKey, admin: AisleClient, shop: Shop
) -> None:
    user = unique("offline")
    _open_storefront(browser, static_origin, gateway, key, user, shop, flush_ms="60000", retry_ms="200")
    gateway.stop()
    try:
        _click_product(browser, shop.id("s3"))
        failed = _until(
            browser,
            lambda d: next(
                (s for s in d.execute_script("return window.aisleDemo.sends") if s["status"] == 0), None
            ),
            "a send that got no answer",
        )
    finally:
        gateway.start()  # the same port: the tracker's retries find it again
    delivered = _until(
        browser,
        lambda d: next(
            (
                s
                for s in d.execute_script("return window.aisleDemo.sends")
                if s["status"] == 200 and set(failed["eventIds"]) <= set(s["eventIds"])
            ),
            None,
        ),
        "the same events delivered once the gateway is back",
    )
    assert delivered["attempt"] > failed["attempt"]
    recent = _recent(admin, user)
    assert recent.count((events_pb2.CLICK, shop.id("s3"))) == 1
    assert recent.count((events_pb2.VIEW, shop.id("s3"))) == 1


def test_events_queued_when_the_page_goes_away_are_delivered(
    browser: Any, static_origin: str, gateway: GatewayProcess, key: PrivateKey, admin: AisleClient, shop: Shop
) -> None:
    user = unique("leaver")
    _open_storefront(browser, static_origin, gateway, key, user, shop, flush_ms="60000")
    _click_product(browser, shop.id("b3"), css="button.add-to-cart")
    assert browser.execute_script("return window.aisleDemo.tracker.pending()") >= 1  # queued, not sent
    browser.get("about:blank")  # pagehide: the tracker sends the queue with fetch keepalive
    _until(
        browser,
        lambda d: (events_pb2.ADD_TO_CART, shop.id("b3")) in _recent(admin, user),
        "the add-to-cart sent on page hide",
    )
    assert list(admin.profile(user).cart_item_ids) == [shop.id("b3")]
