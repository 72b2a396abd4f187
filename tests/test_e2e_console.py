"""The ops console in a real browser: Playwright driving Debian's chromium against a real Airflow api-server.

One refresh of a small world is computed in-process; Airflow (api-server, scheduler, dag-processor) then
serves the plugin page and runs the global_medoids triggers the page sends. The flow is what an ops person
does: log in, open the page, replace cluster N's representative, watch the run succeed and the page show
the new representative and its override, try an invalid item and read the message, revoke the override.
Its screenshots are the ones in docs/operations.md: ``RECSYS_SCREENSHOTS=1`` writes them to docs/img/ (else to a
temporary folder, so a test run leaves the tree clean). Select with ``pytest -m e2e``.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import httpx
import pytest

from tests.airflow_stack import REPO, AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
CHROMIUM = Path("/usr/bin/chromium")
# Playwright cannot download its own browser here: the system chromium with flags that keep it offline.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMG = REPO / "docs" / "img"
DAY = date(2026, 11, 13)
END = date(2026, 11, 14)
WORLD = {"users": 300, "items": 900, "days": 10, "seed": 3}
RUN_TIMEOUT_MS = 300_000

if not CHROMIUM.exists():
    pytestmark.append(pytest.mark.skip(reason="Debian chromium is not installed (.ci/run installs it)"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from recsys_notify.core.config import load_settings
    from recsys_notify.core.storage import Storage
    from recsys_notify.global_medoids import step as gm
    from recsys_notify.synthetic import generate, generator_config
    from recsys_notify.user_medoids import step as um

    root = tmp_path_factory.mktemp("console-e2e") / "data"
    storage = Storage(str(root))
    generate(storage, generator_config(WORLD["users"], WORLD["items"], WORLD["days"], END, WORLD["seed"]))
    settings = load_settings(environ={"RECSYS__DATA_ROOT": str(root), "RECSYS__GLOBAL_MEDOIDS__K": "12"})
    um.run(storage, settings, DAY, {"shards": 1})
    gm.run(storage, settings, DAY)
    return root


@pytest.fixture(scope="module")
def stack(data_root, tmp_path_factory):
    s = AirflowStack(tmp_path_factory.mktemp("airflow-home"), REPO / "dags",
                     {"RECSYS__DATA_ROOT": str(data_root), "RECSYS__GLOBAL_MEDOIDS__K": "12"})
    try:
        s.start(["global_medoids"])
        s.unpause("global_medoids")
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def page(stack):
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_playwright = sync_api.sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        yield context.new_page()
        browser.close()


def test_console_needs_login_and_unknown_conf_is_refused(stack):
    assert httpx.get(f"{stack.url}/recsys-console/api/refreshes", timeout=30).status_code == 401
    before = len(stack.runs("global_medoids"))
    resp = stack.trigger("global_medoids", DAY.isoformat(), {"replace_representative": [], "reason": "x"},
                         expect=400)
    assert "did you mean replace_representatives?" in resp.json()["detail"]
    assert len(stack.runs("global_medoids")) == before


def test_replace_invalid_item_and_revoke_in_the_browser(stack, page, data_root, tmp_path):
    from playwright.sync_api import expect

    from recsys_notify.core.storage import Storage

    storage = Storage(str(data_root))
    img = IMG if os.environ.get("RECSYS_SCREENSHOTS") == "1" else tmp_path
    img.mkdir(exist_ok=True)
    page.goto(f"{stack.url}/recsys-console/")  # not logged in: the page sends us to Airflow's login
    page.wait_for_selector("input[type=password]")
    page.locator("input:not([type=password])").first.fill("admin")
    page.fill("input[type=password]", stack.password)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.goto(f"{stack.url}/recsys-console/")
    expect(page.locator("#user")).to_have_text("signed in as admin")
    expect(page.locator("tr.cluster").first).to_be_visible()
    page.screenshot(path=str(img / "console-clusters.png"), full_page=True)

    reps = storage.read("global_medoids", DAY)
    star = reps[reps["language"] == "*"].sort_values("cluster_size", ascending=False).iloc[0]
    cluster, current = int(star["cluster_id"]), int(star["item_id"])
    page.click(f"tr.cluster[data-cluster='{cluster}']")
    expect(page.locator("#detail h2")).to_contain_text(f"Cluster {cluster}")
    pick = next(b for b in page.locator("button[data-pick]").all() if int(b.get_attribute("data-pick")) != current)
    item = int(pick.get_attribute("data-pick"))
    pick.click()
    expect(page.locator("#f-item")).to_have_value(str(item))
    page.fill("#f-reason", "campaign: launch week")
    page.click("#do-replace")
    expect(page.locator("#message.ok")).to_contain_text("done", timeout=RUN_TIMEOUT_MS)
    row = page.locator(f"tr.cluster[data-cluster='{cluster}']")
    expect(row).to_contain_text(f"#{item}")
    expect(row.locator(".override")).to_be_visible()
    override = page.locator("#overrides tr[data-override]")
    expect(override).to_have_count(1)
    expect(override).to_contain_text("admin")
    expect(page.locator("#reps .card[data-language='*']")).to_contain_text(f"#{item}")
    page.screenshot(path=str(img / "console-override.png"), full_page=True)

    audit = storage.read("overrides", DAY)
    assert audit[["action", "cluster_id", "item_id", "requested_by", "reason"]].values.tolist() == [
        ["replace", cluster, item, "admin", "campaign: launch week"]]
    shipped = storage.read("global_medoids", DAY).set_index(["cluster_id", "language"]).loc[(cluster, "*")]
    assert (shipped["item_id"], shipped["source"]) == (item, "override")

    runs = len(stack.runs("global_medoids"))
    page.fill("#f-item", "987654321")
    page.click("#do-replace")
    expect(page.locator("#message.error")).to_contain_text("item 987654321 does not exist")
    page.screenshot(path=str(img / "console-invalid.png"), full_page=True)
    assert len(stack.runs("global_medoids")) == runs  # refused on the page: no run was created

    oid = audit["override_id"].iloc[0]
    page.fill("#f-reason", "campaign over")
    page.click(f"button[data-revoke='{oid}']")
    expect(page.locator("#message.ok")).to_contain_text(f"revoke {oid}: done", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#overrides")).to_contain_text("none")
    expect(row.locator(".override")).to_have_count(0)
    revoked = storage.read("overrides", DAY).set_index("override_id").loc[oid]
    assert (revoked["revoked_dt"], revoked["revoked_by"]) == (DAY.isoformat(), "admin")
    # Both triggers were for the same date: accepted (no logical date, unique run ids), each run by the user.
    manual = [r for r in stack.runs("global_medoids") if r["conf"].get("date") == DAY.isoformat()]
    assert len(manual) == 2 and {r["triggering_user_name"] for r in manual} == {"admin"}
    assert all(r["state"] == "success" for r in manual)

    page.goto(f"{stack.url}/dags/global_medoids")  # the console as a tab of the DAG, inside the Airflow UI
    tab = page.get_by_role("tab", name="Clusters").or_(page.get_by_role("link", name="Clusters"))
    tab.first.click()
    expect(page.frame_locator("iframe").first.locator("tr.cluster").first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(img / "console-dag-tab.png"))
