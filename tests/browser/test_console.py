"""The back-office console in a real browser: Debian's Chromium driven by
Playwright, against `printworks up` (target/debug/printworks) on a fresh
data directory.

One scripted walk, as a person would take it: log in; find the held
orders; release one held for a failed print and watch it reach shipped
without a reload; watch an order held for a photo ship after the customer
replaced the photo through the API; reprint a job; resolve a payment flag;
redrive a dead letter; check that the charts are drawn and that each CSV
equals the API's figures; reach every action with the keyboard; no error
in the browser console. A screenshot of each page goes to
$CONSOLE_ARTIFACTS (default target/console-screenshots).

    .venv/bin/python -m pytest tests/browser -q
"""

import csv
import io
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("PRINTWORKS_BIN", ROOT / "target" / "debug" / "printworks"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CONSOLE_ARTIFACTS", ROOT / "target" / "console-screenshots"))
SAMPLE_UPLOAD = "upl_5a3b1e00000000000000000000000000"
SHIP_TIMEOUT_MS = 120_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Shop:
    """`printworks up` on a fresh data directory, and its HTTP API."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="console-")
        self.data = Path(self.dir.name) / "var"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(self.dir.name) / "up.log", "w+")
        self.process = subprocess.Popen(
            [str(BINARY), "up", "--port", str(self.port), "--data-dir", str(self.data), "--sync", "normal"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.keys = {}
        for _ in range(300):
            self.log.flush()
            text = Path(self.log.name).read_text()
            self.keys = dict(re.findall(r"^key (\S+) (\S+)$", text, re.M))
            if "demo-b2b" in self.keys and self.reachable():
                break
            assert self.process.poll() is None, text
            time.sleep(0.2)
        assert "demo-b2b" in self.keys, Path(self.log.name).read_text()[-3000:]
        self.support = self.operator("cs", "support")
        self.muc = self.operator("pia", "plant:muc")

    def reachable(self):
        try:
            urllib.request.urlopen(self.base + "/console", timeout=1)
            return True
        except OSError:
            return False

    def operator(self, id, role):
        out = subprocess.run(
            [str(BINARY), "operator", "add", "--id", id, "--role", role, "--data-dir", str(self.data)],
            check=True, capture_output=True, text=True,
        ).stdout
        return next(line for line in out.splitlines() if line.startswith("pwop_"))

    def call(self, method, path, key, body=None, headers=None, raw=None, content_type="application/json"):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def place(self, tenant, items):
        order = {
            "locale": "de", "currency": "EUR",
            "customer": {"name": "Erika Mustermann", "email": "erika@example.com"},
            "shipping": {"method": "standard", "address": {
                "name": "Erika Mustermann", "line1": "Heidestr. 17", "postal_code": "51147",
                "city": "Köln", "country": "DE"}},
            "items": items,
        }
        status, body = self.call("POST", "/v1/orders", self.keys[tenant], order,
                                 {"Idempotency-Key": str(uuid.uuid4())})
        assert status == 201, body
        return body["id"]

    def order(self, tenant, id):
        status, body = self.call("GET", f"/v1/orders/{id}", self.keys[tenant])
        assert status == 200, body
        return body

    def until(self, tenant, id, state, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            order = self.order(tenant, id)
            if order["state"] == state:
                return order
            time.sleep(0.3)
        raise AssertionError(f"{id} did not reach {state}: {order['state']}")

    def pdf_upload(self, tenant):
        """An upload that is a PDF, not a photo: render holds the order."""
        pdf = b"%PDF-1.7\n1 0 obj << >> endobj\n"
        status, requested = self.call("POST", "/v1/uploads", self.keys[tenant],
                                      {"content_type": "image/jpeg", "size_bytes": len(pdf)})
        assert status == 201, requested
        put = urllib.request.Request(requested["upload"]["url"], data=pdf, method="PUT")
        put.add_header("Content-Type", "image/jpeg")
        urllib.request.urlopen(put, timeout=10)
        return requested["upload_id"]

    def pay(self, id, *extra):
        subprocess.run(
            [str(BINARY), "pay", id, "--url", self.base, "--data-dir", str(self.data), *extra],
            check=True, capture_output=True, text=True,
        )

    def jam(self, plant):
        (self.data / "plants" / plant / "jam").touch()

    def unjam(self):
        for plant in ("muc", "btf"):
            (self.data / "plants" / plant / "jam").unlink(missing_ok=True)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def shop():
    shop = Shop()
    yield shop
    shop.stop()


def csv_of(lines, columns):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for line in lines:
        writer.writerow([line[c] for c in columns])
    return out.getvalue()


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_an_operator_works_through_the_console(shop):
    # What needs a person, made through the APIs as it happens:
    # - A: a photo that is a PDF, held by render (the customer can fix it);
    a = shop.place("demo-b2b", [{"sku": "poster-30x40", "quantity": 1,
                                 "images": [{"upload_id": shop.pdf_upload("demo-b2b")}]}])
    # - B: a print that failed at the plant (both machines jammed);
    shop.jam("muc")
    shop.jam("btf")
    b = shop.place("demo-b2b", [{"sku": "poster-20x30", "quantity": 1,
                                 "images": [{"upload_id": SAMPLE_UPLOAD}]}])
    # - a message dispatch could not handle, in its dead-letter queue.
    sqs = boto3.client("sqs", endpoint_url=shop.base, region_name="eu-central-1",
                       aws_access_key_id="local", aws_secret_access_key="local")
    dlq = sqs.get_queue_url(QueueName="dispatch-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody='{"not": "an event"}')
    shop.until("demo-b2b", a, "on_hold")
    held_b = shop.until("demo-b2b", b, "on_hold")
    assert held_b["hold"]["reason"].startswith("Production failed"), held_b
    shop.unjam()
    # - C: a B2C order paid twice (a second PaymentIntent): a payment flag.
    c = shop.place("demo-brand", [{"sku": "poster-30x40", "quantity": 1,
                                   "images": [{"upload_id": SAMPLE_UPLOAD}]}])
    shop.pay(c)
    shop.pay(c, "--payment-id", "pi_second_payment_of_c")

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))

        # The page's policy: this origin's script and style only.
        response = page.goto(shop.base + "/console")
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, policy
        assert "frame-ancestors 'none'" in policy

        # Log in with the keyboard.
        expect(page.get_by_label("Operator key")).to_be_focused()
        shot(page, "01-login")
        page.keyboard.type("pwop_local_wrong_0000000000000000000000000000")
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert")).to_contain_text("not accepted")
        page.get_by_label("Operator key").fill(shop.support)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Needs a person")).to_be_visible()
        expect(page.locator("#live")).to_have_text("live")
        # Nothing personal in the address bar, ever.
        assert shop.support not in page.url and "erika" not in page.url

        held = page.locator("#held")
        expect(held.locator(f'tr[data-order="{a}"]')).to_contain_text("unsupported_format")
        expect(held.locator(f'tr[data-order="{b}"]')).to_contain_text("production_failed")
        expect(page.locator(f'#flags tr[data-order="{c}"]').first).to_contain_text("duplicate_payment")
        expect(page.locator('#dead-letters tr[data-queue="dispatch"] td.num')).to_have_text("1")
        shot(page, "02-needs-a-person")

        # The keyboard reaches every action on the page.
        actions = page.locator("button[data-action]")
        wanted = actions.count()
        assert wanted >= 4
        reached = set()
        page.locator("body").focus()
        for _ in range(200):
            page.keyboard.press("Tab")
            marker = page.evaluate(
                "() => { const e = document.activeElement; return e && e.dataset.action"
                " ? e.dataset.action + ':' + (e.dataset.order || e.dataset.queue) : null }")
            if marker:
                reached.add(marker)
            if len(reached) == wanted:
                break
        every = {f"{actions.nth(i).get_attribute('data-action')}:"
                 f"{actions.nth(i).get_attribute('data-order') or actions.nth(i).get_attribute('data-queue')}"
                 for i in range(wanted)}
        assert reached == every, (reached, every)

        # Release B: a reason and a confirmation; then, without a reload,
        # the list loses it and its page follows it to shipped.
        page.evaluate("() => { window.__notReloaded = true }")
        held.locator(f'tr[data-order="{b}"] button[data-action="release"]').focus()
        page.keyboard.press("Enter")
        dialog = page.locator("dialog#dialog")
        expect(dialog).to_be_visible()
        expect(page.get_by_label("Reason")).to_be_focused()
        shot(page, "03-release-dialog")
        page.keyboard.type("the machine was cleaned; print again")
        dialog.get_by_role("button", name="Release").click()
        expect(dialog).to_be_hidden()
        expect(held.locator(f'tr[data-order="{b}"]')).to_have_count(0)
        page.goto(f"{shop.base}/console#/order/{b}")
        page.evaluate("() => { window.__notReloaded = true }")
        expect(page.locator("#order-state")).to_have_text("shipped", timeout=SHIP_TIMEOUT_MS)
        assert page.evaluate("() => window.__notReloaded === true"), "the page was reloaded"
        expect(page.locator("#h-actions + table")).to_contain_text("the machine was cleaned")

        # A: the customer replaces the photo through the API; the open
        # order page follows it to shipped without a reload.
        page.goto(f"{shop.base}/console#/order/{a}")
        expect(page.locator("#order-state")).to_have_text("on_hold")
        page.evaluate("() => { window.__notReloaded = true }")
        status, body = shop.call("PUT", f"/v1/orders/{a}/items/1/images/0", shop.keys["demo-b2b"],
                                 {"upload_id": SAMPLE_UPLOAD}, {"Idempotency-Key": str(uuid.uuid4())})
        assert status == 200, body
        expect(page.locator("#order-state")).to_have_text("shipped", timeout=SHIP_TIMEOUT_MS)
        assert page.evaluate("() => window.__notReloaded === true")
        expect(page.locator("#h-jobs + table")).to_contain_text("SIM-POST")
        # The print file's preview, loaded by the browser from its
        # presigned link (the page's policy allows the prints' origin).
        preview = page.locator("#previews img").first
        expect(preview).to_be_visible()
        page.wait_for_function(
            "() => { const i = document.querySelector('#previews img'); return i && i.complete && i.naturalWidth > 0 }")
        status, shown = shop.call("GET", f"/v1/ops/orders/{a}", shop.support)
        assert status == 200 and len(shown["previews"]) == 1, shown.get("previews")
        assert page.evaluate("() => document.querySelector('#previews img').naturalWidth") == shown["previews"][0]["width"]
        shot(page, "04-order")

        # Reprint A's job: attempt 2 is made and ships too.
        page.locator('#order-actions button[data-action="reprint"]').click()
        expect(dialog).to_be_visible()
        dialog.locator('input[name="jobs"]').first.check()
        page.get_by_label("Reason").fill("the parcel arrived damaged")
        dialog.get_by_role("button", name="Reprint").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#status")).to_contain_text("reprint done")
        jobs = page.locator("#h-jobs + table tbody tr")
        expect(jobs).to_have_count(2)
        expect(jobs.filter(has_text="superseded")).to_have_count(1)
        reprinted = jobs.filter(has_text="yes")
        expect(reprinted.locator(".badge")).to_have_text("shipped", timeout=SHIP_TIMEOUT_MS)
        expect(page.locator("#order-state")).to_have_text("shipped")
        assert page.evaluate("() => window.__notReloaded === true")

        # Resolve C's flag, and redrive the dead letter.
        page.get_by_role("link", name="Needs a person").click()
        flag = page.locator(f'#flags tr[data-order="{c}"] button[data-action="resolve"]')
        flag.click()
        page.get_by_label("Note").fill("refunded the second payment in the Stripe dashboard")
        dialog.get_by_role("button", name="Resolve").click()
        expect(page.locator(f'#flags tr[data-order="{c}"] button[data-action="resolve"]')).to_have_count(0)
        # Its refund request stays until the provider says the money went
        # back; then the list drops it, without a reload.
        expect(page.locator(f'#flags tr[data-order="{c}"]')).to_contain_text("refund request")
        shop.pay(c, "--event", "refund", "--payment-id", "pi_second_payment_of_c")
        expect(page.locator(f'#flags tr[data-order="{c}"]')).to_have_count(0)
        page.locator('#dead-letters tr[data-queue="dispatch"] button[data-action="redrive"]').click()
        shot(page, "05-redrive-dialog")
        dialog.get_by_role("button", name="Redrive").click()
        expect(page.locator("#status")).to_contain_text("dispatch: redriven (1 moved back)")
        status, flags = shop.call("GET", "/v1/ops/flags", shop.support)
        assert status == 200 and all(o["order_id"] != c for o in flags["orders"]), flags
        status, shown = shop.call("GET", f"/v1/ops/orders/{c}", shop.support)
        assert [a["action"] for a in shown["actions"]] == ["resolve"], shown["actions"]

        # Search: by the customer's e-mail (never in the address), then by
        # a parcel's tracking number.
        page.get_by_role("link", name="Search").click()
        expect(page.get_by_role("heading", name="Search")).to_be_visible()
        page.get_by_label("Customer e-mail").fill("ERIKA@example.com")
        page.keyboard.press("Enter")
        rows = page.locator("#results tbody tr")
        expect(rows).to_have_count(3)
        assert "erika" not in page.url.lower(), page.url
        expect(rows.first).to_have_attribute("data-order", c)  # newest first
        shot(page, "06-search")
        status, shown = shop.call("GET", f"/v1/ops/orders/{a}", shop.support)
        numbers = [j["tracking"] for att in shown["attempts"] for j in att["jobs"] if j.get("tracking")]
        assert numbers, shown["attempts"]
        page.get_by_label("Customer e-mail").fill("")
        page.get_by_label("Tracking number").fill(numbers[0])
        page.get_by_role("button", name="Search").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-order", a)

        # The statistics: every chart drawn, each CSV the API's figures
        # (once the three orders shipped and the projection counted them).
        shop.until("demo-brand", c, "shipped")
        deadline = time.time() + 30
        while True:
            status, report = shop.call("GET", "/v1/ops/stats", shop.support)
            assert status == 200, report
            if sum(l["orders"] for l in report["lead_times"]) == 3 or time.time() > deadline:
                break
            time.sleep(0.3)
        page.get_by_role("link", name="Statistics").click()
        expect(page.get_by_role("heading", name="Statistics")).to_be_visible()
        # One bar per day, per plant and product (p50 and p95), per code.
        days = {l["day"] for l in report["revenue"]}
        bars = {
            "chart-orders": len(days),
            "chart-revenue-EUR": len(days),
            "chart-lead": 2 * len(report["lead_times"]),
            "chart-holds": len({h["code"] for h in report["holds"]}),
        }
        for chart, count in bars.items():
            expect(page.locator(f"#{chart} svg")).to_be_visible()
            expect(page.locator(f"#{chart} svg rect")).to_have_count(count)
        columns = {
            "revenue": ["day", "tenant", "currency", "orders", "net", "vat", "gross", "refunded", "average_order_value"],
            "lead_times": ["plant", "sku", "orders", "p50_minutes", "p95_minutes"],
            "holds": ["day", "tenant", "code", "holds"],
        }
        for section, names in columns.items():
            button = page.locator(f'button[data-csv="{section}"]').first
            with page.expect_download() as info:
                button.click()
            downloaded = Path(info.value.path()).read_text()
            assert downloaded == csv_of(report[section], names), (section, downloaded)
        assert sum(l["orders"] for l in report["revenue"]) == 3
        assert sum(l["orders"] for l in report["lead_times"]) == 3
        assert sum(l["refunded"] for l in report["revenue"]) > 0
        assert {h["code"] for h in report["holds"]} == {"unsupported_format", "production_failed"}
        # Notifications against the caps: two bars (the busiest day, the
        # cap) per tenant and channel, and the CSV is the API's lines.
        assert report["notifications"], report
        pairs = {(n["tenant"], n["channel"]) for n in report["notifications"]}
        expect(page.locator("#chart-notifications svg rect")).to_have_count(2 * len(pairs))
        with page.expect_download() as info:
            page.locator('button[data-csv="notifications"]').click()
        assert Path(info.value.path()).read_text() == csv_of(
            report["notifications"], ["day", "tenant", "channel", "sent", "deferred", "cap"])
        assert all(n["cap"] > 0 and n["sent"] <= n["cap"] for n in report["notifications"])
        shot(page, "07-statistics")

        # C's page: the notifications it was sent (channel, time, status,
        # subject), never a body or an address.
        page.goto(f"{shop.base}/console#/order/{c}")
        status, shown = shop.call("GET", f"/v1/ops/orders/{c}", shop.support)
        assert status == 200 and shown["notifications"], shown.get("notifications")
        sent = page.locator("#notifications tbody tr")
        expect(sent).to_have_count(len(shown["notifications"]))
        subjects = [n["subject"] for n in shown["notifications"] if n.get("subject")]
        assert subjects, shown["notifications"]
        expect(page.locator("#notifications")).to_contain_text(subjects[0])
        assert "erika@example.com" not in page.locator("#notifications").inner_text()
        page.locator("#notifications").scroll_into_view_if_needed()
        shot(page, "08-order-notifications")

        # The plants: as the API says, and live: a new order's job ships
        # while the page is open, and the page follows without a reload.
        page.get_by_role("link", name="Plants").click()
        expect(page.get_by_role("heading", name="Plants")).to_be_visible()
        status, board = shop.call("GET", "/v1/ops/plants", shop.support)
        assert status == 200, board
        for row in board["plants"]:
            cells = page.locator(f'tr[data-plant="{row["plant"]}"] td.num')
            expect(cells.last).to_have_text(str(row["shipped_today"]))
        shipped_before = sum(r["shipped_today"] for r in board["plants"])
        assert shipped_before >= 4, board
        assert any(r["last_report_at"] for r in board["plants"]), board
        page.evaluate("() => { window.__notReloaded = true }")
        d = shop.place("demo-b2b", [{"sku": "poster-20x30", "quantity": 1,
                                     "images": [{"upload_id": SAMPLE_UPLOAD}]}])
        shop.until("demo-b2b", d, "shipped")
        page.wait_for_function(
            "(before) => [...document.querySelectorAll('tr[data-plant]')]"
            ".reduce((n, tr) => n + Number(tr.querySelector('td.num:last-child').textContent), 0) === before + 1",
            arg=shipped_before, timeout=SHIP_TIMEOUT_MS)
        assert page.evaluate("() => window.__notReloaded === true")
        shot(page, "09-plants")

        # A plant's operator: their plant's held orders, no money.
        plant = browser.new_context().new_page()
        plant.on("console", lambda m: m.type == "error" and errors.append(m.text))
        plant.goto(shop.base + "/console")
        plant.get_by_label("Operator key").fill(shop.muc)
        plant.keyboard.press("Enter")
        expect(plant.locator("#flags")).to_contain_text("may not see payment flags")
        shot(plant, "10-plant-operator")
        # Their plant only on the plants page.
        plant.get_by_role("link", name="Plants").click()
        expect(plant.locator("tr[data-plant]")).to_have_count(1)
        expect(plant.locator('tr[data-plant="muc"]')).to_be_visible()
        browser.close()

    # 401s of the wrong key at login are answers the page handles; nothing
    # else may have gone wrong in the page.
    unexpected = [e for e in errors if "401" not in e and "403" not in e]
    assert unexpected == [], unexpected
