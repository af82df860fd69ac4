"""The supervisors' read-only web view (docs/web.md; issue 15 items 3-4), driven in a
real browser: headless Chromium from Debian through chromedriver (python3-selenium,
chromium-driver). Users are configured in broker.http.users, bound to a supervisor
agent; every page's read is in the trail with that agent as actor and a ref naming
the page and the web user; the child's personal data appears only after the explicit
"显示个人资料" POST, itself a read in the trail. The broker runs on the virtual clock
(`--test-clock`): idle sessions and lock-out windows expire without sleeping.
"""

import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (  # noqa: F401  (fixtures)
    case_ack, make_clock_broker, receiver, wait_push,
)
from test_phone_ack import (
    LINK, PHONE_A, PHONE_B, base_url, kinds, trail,
)
from test_webhooks import PROMPT, Setup, of_type

BIN_DIR = Path(os.environ.get("CAREHUB_BIN_DIR") or h.REPO / "bin")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MINUTE = 60_000
PASSWORD = "正确的马-battery-staple"
XSS_NAME = "<img src=x onerror=document.title='pwned'>"
XSS_DESC = "<script>document.title='pwned'</script>甲"
PLAIN_NAME = "李小红"

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - reported by the fixture below
    HAVE_SELENIUM = False


def _missing():
    if not HAVE_SELENIUM:
        return "python3-selenium is not installed (Debian package python3-selenium)"
    for p, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(p, os.X_OK):
            return f"{p} is not installed (Debian package {pkg})"
    return None


@pytest.fixture(scope="module")
def password_hash():
    r = h.run_bin(["passwd"], input=PASSWORD + "\n")
    assert r.returncode == 0 and r.stdout.startswith("$argon2id$"), (r.returncode, r.stderr)
    return r.stdout.strip()


@pytest.fixture
def browser(tmp_path, monkeypatch):
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why + ": CI must run the browser tests (`make deps-test` installs it)",
                        pytrace=False)
        pytest.skip(why)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
              "--window-size=1200,900"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None  # a 303 is an answer to look at, not to follow


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def web_setup(make_clock_broker, tmp_path, receiver, connect, password_hash, **http_extra):
    """test_phone_ack's broker (police, an SMS channel that can acknowledge) with a web user."""
    wf = [{"name": "report", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1h"}]}]
    users = [{"name": "alice", "agent": "supervisor-01", "password_hash": password_hash}]
    return Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
                 channels=[{"id": "duty-sms", "kind": "sms", "path": "/sms",
                            "to": [PHONE_A, PHONE_B], "can_acknowledge": True}],
                 agencies=[{"id": "police", "name": "滨海新区公安局", "channels": ["duty-sms"]}],
                 broker={"http": {"listen": "127.0.0.1:0", "users": users, **http_extra},
                         "timezone": "Asia/Shanghai"})


def report(s, receiver, name, description=None, already=0):
    kw = {"description": description} if description else {}
    body = h.mandatory_report_body(uid("child"), child={"id": uid("cid"), "name": name}, **kw)
    _, _, case = s.report(body)
    m = wait_push(s.desk["police-desk"], pred=lambda m: m["case"] == case)
    rs = receiver.wait("/sms", already + 2, timeout=PROMPT, pred=of_type("case.assigned"))
    links = {r.json["data"]["to"]: LINK.search(r.json["data"]["text"]).group(0) for r in rs
             if r.json["data"]["case"] == case}
    report.assignment = m["id"]
    return case, links


def submit(drv, element_id=None, element=None):
    """Click a button (or link) and wait until the next page has replaced this one."""
    html = drv.find_element(By.TAG_NAME, "html")
    (element or drv.find_element(By.ID, element_id)).click()
    WebDriverWait(drv, 15).until(EC.staleness_of(html))
    WebDriverWait(drv, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def login(drv, url, user="alice", password=PASSWORD):
    drv.get(url + "/")
    drv.find_element(By.ID, "user").send_keys(user)
    drv.find_element(By.ID, "password").send_keys(password)
    submit(drv, "login")


def case_ids(drv):
    return [a.text for a in drv.find_elements(By.CSS_SELECTOR, "#cases a.case")]


def web_reads(s, case):
    return [(r["actor"], r["ref"]) for r in kinds(trail(s, case), "read")
            if "web:" in r.get("ref", "")]


def test_browse_filter_reveal_and_audit(make_clock_broker, tmp_path, receiver, connect,
                                        password_hash, browser):
    s = web_setup(make_clock_broker, tmp_path, receiver, connect, password_hash)
    url = base_url(s)
    c1, _ = report(s, receiver, PLAIN_NAME)
    a1 = report.assignment
    c2, _ = report(s, receiver, XSS_NAME, XSS_DESC, already=2)
    _, r = case_ack(s.desk["police-desk"], a1)  # c1 acknowledged; c2 stays open
    assert r.get("op") == "ack", r
    s.advance(2 * 60 * MINUTE)           # past c2's 1 h deadline: overdue

    login(browser, url)
    assert browser.current_url.endswith("/cases"), browser.current_url
    assert browser.title.startswith("案件列表"), browser.title
    assert set(case_ids(browser)) == {c1, c2}
    cookie = browser.get_cookie("carehub_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie

    # filters: overdue only → c2; agency civil_affairs → none; status closed → none
    browser.find_element(By.ID, "f-overdue").click()
    submit(browser, "f-go")
    assert case_ids(browser) == [c2], browser.page_source[-2000:]
    assert "overdue=1" in browser.current_url
    browser.get(url + "/cases?agency=civil_affairs")
    assert case_ids(browser) == []
    browser.get(url + "/cases")
    Select(browser.find_element(By.ID, "f-status")).select_by_value("closed")
    submit(browser, "f-go")
    assert case_ids(browser) == []
    browser.get(url + "/cases?status=bogus")
    assert "status" in browser.find_element(By.ID, "msg").text

    # the case file: no personal data until asked for
    browser.get(url + "/cases")
    submit(browser, element=next(a for a in browser.find_elements(By.CSS_SELECTOR, "#cases a.case")
                                 if a.text == c1))
    assert browser.title.startswith("案件档案")
    assert PLAIN_NAME not in browser.page_source
    assert ("supervisor-01", "case_file web:alice") in web_reads(s, c1)
    assert not any(ref.startswith("personal_data") for _, ref in web_reads(s, c1))
    submit(browser, "reveal")
    assert PLAIN_NAME in browser.find_element(By.ID, "events").text
    assert ("supervisor-01", "personal_data web:alice") in web_reads(s, c1), web_reads(s, c1)

    # the reveal is on the trail page, with the agent as actor and the user named
    browser.get(f"{url}/trail?id={c1}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#trail tr")
    seen = [(r.find_element(By.CLASS_NAME, "actor").text, r.find_element(By.CLASS_NAME, "ref").text)
            for r in rows[1:]]
    assert ("supervisor-01", "personal_data web:alice") in seen, seen
    submit(browser, "run-verify")
    assert "完好" in browser.find_element(By.ID, "verify").text, browser.page_source[-1500:]

    # the other pages render, with their reads in the trail
    for path, title in (("/report", "响应时间报告"), ("/register", "登记覆盖"), ("/silences", "静默")):
        browser.get(url + path)
        assert browser.title.startswith(title), (path, browser.title)
    browser.get(url + "/report")
    assert browser.find_elements(By.CSS_SELECTOR, "#chart rect"), "the report has its chart"
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#report tr")[1:]]
    # police: 2 assignments, both due (1 acknowledged on time, 1 open past its deadline):
    # 50.0 % on time, no resolve_within, no escalation step, 1 open overdue — the same
    # figures as `carehub report` (common/figures.c)
    assert [r[:5] for r in rows] == [["滨海新区公安局", "2", "2", "1", "50.0%"]], rows
    assert [r[7:10] + r[-2:] for r in rows] == [["0", "0", "-", "0", "1"]], rows
    assert "50.0%" in browser.find_element(By.ID, "chart").text
    (doc,) = [json.loads(ln) for ln in subprocess.run(
        [str(BIN_DIR / "carehub"), "-b", s.b.endpoint, "-a", "supervisor-01", "--wait", "10",
         "report", "--json"], capture_output=True, text=True, timeout=60).stdout.splitlines()]
    (p,) = doc["agencies"]
    assert (p["assignments"], p["due"], p["on_time"], p["on_time_pct"], p["open_overdue"]) == \
        (2, 2, 1, 50.0, 1), p

    # logout: the session is gone
    submit(browser, "logout")
    browser.get(url + "/cases")
    assert browser.find_elements(By.ID, "login") and not case_ids(browser)


def test_payload_never_executes(make_clock_broker, tmp_path, receiver, connect, password_hash,
                                browser):
    s = web_setup(make_clock_broker, tmp_path, receiver, connect, password_hash)
    url = base_url(s)
    case, _ = report(s, receiver, XSS_NAME, XSS_DESC)
    login(browser, url)
    browser.get(f"{url}/case?id={case}")
    submit(browser, "reveal")
    assert browser.title == "案件档案 · carehub", "a script ran: the title changed"
    body = browser.find_element(By.ID, "events")
    assert XSS_NAME in body.text and XSS_DESC in body.text, body.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#events img, #events script, main script")
    assert browser.execute_script("return document.scripts.length") == 0
    assert "&lt;img src=x" in browser.page_source
    assert browser.title == "案件档案 · carehub"


def test_sms_link_in_the_browser(make_clock_broker, tmp_path, receiver, connect, password_hash,
                                 browser):
    s = web_setup(make_clock_broker, tmp_path, receiver, connect, password_hash)
    case, links = report(s, receiver, PLAIN_NAME)
    browser.get(links[PHONE_A])
    assert case in browser.page_source and PLAIN_NAME not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    WebDriverWait(browser, 10).until(lambda d: d.title == "已确认")
    acks = kinds(trail(s, case), "phone_ack")
    assert [r["actor"] for r in acks] == [f"sms:{PHONE_A}"], acks
    browser.get(links[PHONE_B])
    assert "无需再次确认" in browser.page_source


def test_wrong_password_expired_session_and_lockout(make_clock_broker, tmp_path, receiver,
                                                    connect, password_hash, browser):
    s = web_setup(make_clock_broker, tmp_path, receiver, connect, password_hash)
    url = base_url(s)
    case, _ = report(s, receiver, PLAIN_NAME)
    login(browser, url, password="wrong")
    assert "用户名或密码错误" in browser.find_element(By.ID, "msg").text
    assert browser.get_cookie("carehub_session") is None
    browser.get(f"{url}/case?id={case}")
    assert case not in browser.page_source and browser.find_elements(By.ID, "login")
    login(browser, url, user="mallory")
    assert "用户名或密码错误" in browser.find_element(By.ID, "msg").text

    login(browser, url)
    assert case_ids(browser) == [case]
    s.advance(31 * MINUTE)  # idle past 30 min
    browser.get(url + "/cases")
    assert browser.find_elements(By.ID, "login") and case not in browser.page_source

    # 5 failures lock the name, the right password too, until the window ends
    for _ in range(5):
        login(browser, url, password="wrong")
    login(browser, url)
    assert "锁定" in browser.find_element(By.ID, "msg").text
    assert not case_ids(browser)
    s.advance(16 * MINUTE)
    login(browser, url)
    assert case_ids(browser) == [case]


def test_csrf_and_headers(make_clock_broker, tmp_path, receiver, connect, password_hash):
    s = web_setup(make_clock_broker, tmp_path, receiver, connect, password_hash)
    url = base_url(s)
    case, _ = report(s, receiver, PLAIN_NAME)
    st, page, hdrs = http("GET", url + "/")
    csp = hdrs.get("Content-Security-Policy", "")
    assert st == 200 and "default-src 'none'" in csp and "script-src" not in csp, hdrs
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    login_cookie = hdrs["Set-Cookie"].split(";")[0]
    # a login without the cookie's token is refused
    body = urllib.parse.urlencode({"user": "alice", "password": PASSWORD, "csrf": "x" * 43})
    st, _, hdrs2 = http("POST", url + "/login", body.encode(), {"Cookie": login_cookie})
    assert st == 403 and "carehub_session" not in hdrs2.get("Set-Cookie", "")
    body = urllib.parse.urlencode({"user": "alice", "password": PASSWORD, "csrf": m.group(1)})
    st, _, hdrs2 = http("POST", url + "/login", body.encode(), {"Cookie": login_cookie})
    assert st == 303 and hdrs2["Location"] == "/cases", (st, hdrs2)
    sess = hdrs2["Set-Cookie"]
    assert "HttpOnly" in sess and "SameSite=Strict" in sess and "Secure" not in sess, sess
    cookie = sess.split(";")[0]
    # a POST without the session's CSRF token reveals nothing and reads nothing
    before = web_reads(s, case)
    st, page, _ = http("POST", url + "/reveal", f"id={case}".encode(), {"Cookie": cookie})
    assert st == 403 and PLAIN_NAME not in page
    assert web_reads(s, case) == before
    st, page, _ = http("GET", f"{url}/case?id={case}", None, {"Cookie": cookie})
    assert st == 200 and PLAIN_NAME not in page
    tok = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    st, page, _ = http("POST", url + "/reveal", f"id={case}&csrf={tok}".encode(), {"Cookie": cookie})
    assert st == 200 and PLAIN_NAME in page
    st, _, _ = http("GET", url + "/web.css")
    assert st == 200
    st, _, _ = http("GET", f"{url}/case?id=../../etc", None, {"Cookie": cookie})
    assert st == 400


def test_cookies_are_secure_behind_https(make_clock_broker, tmp_path, receiver, connect,
                                         password_hash):
    s = web_setup(make_clock_broker, tmp_path, receiver, connect, password_hash,
                  public_url="https://hub.example.cn")
    log = s.b.log()
    assert "broker: http on https://hub.example.cn" in log, log
    port = re.search(r"http: listening on 127\.0\.0\.1:0 \(port (\d+)\)", log).group(1)
    url = f"http://127.0.0.1:{port}"  # the proxy's side of https
    st, page, hdrs = http("GET", url + "/")
    assert st == 200 and hdrs["Set-Cookie"].endswith("; Secure"), hdrs
    tok = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"user": "alice", "password": PASSWORD, "csrf": tok})
    st, _, hdrs = http("POST", url + "/login", body.encode(),
                       {"Cookie": hdrs["Set-Cookie"].split(";")[0]})
    assert st == 303 and "HttpOnly" in hdrs["Set-Cookie"] and "Secure" in hdrs["Set-Cookie"], hdrs


def test_user_bound_to_a_school_is_refused_at_load(tmp_path, password_hash):
    b = h.Broker(tmp_path / "b")
    b.config["broker"]["http"] = {"listen": "127.0.0.1:0", "users": [
        {"name": "bob", "agent": "school-0042", "password_hash": password_hash},
        {"name": "eve", "agent": "supervisor-01", "password_hash": "plaintext"},
        {"name": "zed", "agent": "nobody", "password_hash": password_hash}]}
    b.write_config()
    r = h.run_bin(["--check-config", "-c", str(b.config_path)])
    assert r.returncode == 78, (r.returncode, r.stderr)
    assert re.search(r":\d+:\d+: broker\.http\.users\[\]\.agent \"school-0042\" has role school",
                     r.stderr), r.stderr
    assert "is not an argon2id hash" in r.stderr and "plaintext" not in r.stderr, r.stderr
    assert "\"nobody\" is not a configured agent" in r.stderr, r.stderr


def test_passwd_command():
    r = h.run_bin(["passwd"], input="")
    assert r.returncode == 64 and "stdin" in r.stderr
    r = h.run_bin(["passwd"], input="s3cret\n")
    assert r.returncode == 0 and re.fullmatch(r"\$argon2id\$v=19\$m=\d+,t=\d+,p=1\$\S+\n", r.stdout)
    assert "s3cret" not in r.stdout
