"""Fixtures for the end-to-end tests: real carehubd processes, real DEALERs.

  carehub_bin      path of the broker binary (fails every test clearly when missing)
  broker           a broker shared by the tests of one module (standard config of
                   carehub_harness.base_config); replaced if a test made it die,
                   and that test is reported as an error
  make_broker      factory: make_broker(overrides=None, start=True, name=...) -> Broker
                   on its own tmp dir; stopped with SIGTERM at teardown, and the
                   teardown fails when the exit code is not 0 or a sanitizer spoke
                   (set broker.expect_clean_exit = False after killing it on purpose)
  connect          factory: connect(broker_or_endpoint, login=None, **kw) -> Agent,
                   closed at teardown; login="school-0042" says hello first

On a failure, the stderr of every broker the test used is attached to the report.
"""

import atexit
import os

import pytest

import carehub_harness as h
# Skips listed with their reasons; one not in expected_skips.txt fails the run (issue 12).
from skips import pytest_collectreport, pytest_runtest_logreport  # noqa: F401
from skips import pytest_sessionfinish, pytest_terminal_summary  # noqa: F401

atexit.register(h.kill_all_brokers)

# The agent programs show headings in Chinese unless told otherwise (--lang,
# CAREHUB_LANG): the tests written against the English headings run with
# CAREHUB_LANG=en; test_local_time.py and test_report_html.py check the Chinese.
os.environ.setdefault("CAREHUB_LANG", "en")


@pytest.fixture(scope="session")
def carehub_bin():
    path = h.broker_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"carehubd not found at {path}: build it (make, or make SAN=1 "
                    f"build/san/bin/carehubd) or set CAREHUB_BIN", pytrace=False)
    return path


@pytest.fixture(autouse=True)
def _track_brokers():
    h.CURRENT_BROKERS.clear()
    yield


@pytest.fixture(scope="module")
def _module_broker(tmp_path_factory, carehub_bin):
    holder = {"broker": None, "problems": []}
    yield holder
    b = holder["broker"]
    if b is not None:
        holder["problems"] += b.finish()
    if holder["problems"]:
        pytest.fail("\n".join(holder["problems"]), pytrace=False)


@pytest.fixture
def broker(_module_broker, tmp_path_factory):
    b = _module_broker["broker"]
    if b is None or not b.running():
        if b is not None:
            _module_broker["problems"] += b.finish()
        b = h.Broker(tmp_path_factory.mktemp("shared-broker"), name="carehubd(shared)")
        b.start()
        _module_broker["broker"] = b
    if b not in h.CURRENT_BROKERS:
        h.CURRENT_BROKERS.append(b)
    yield b
    if not b.running():
        b.expect_clean_exit = False
        pytest.fail(f"carehubd died during this test (exit code {b.proc.poll()})\n"
                    f"--- stderr ---\n{b.log_tail()}", pytrace=False)


@pytest.fixture
def make_broker(tmp_path, carehub_bin):
    made = []

    def factory(overrides=None, start=True, name=None, config=None):
        name = name or f"carehubd-{len(made) + 1}"
        b = h.Broker(tmp_path / name, overrides=overrides, config=config, name=name)
        made.append(b)
        if start:
            b.start()
        return b

    yield factory
    problems = []
    for b in made:
        problems += b.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def connect():
    agents = []

    def factory(target, login=None, **kw):
        endpoint = target.endpoint if isinstance(target, h.Broker) else target
        a = h.Agent(endpoint, **kw)
        agents.append(a)
        if login:
            a.login(login)
        return a

    yield factory
    for a in agents:
        a.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in list(h.CURRENT_BROKERS):
            rep.sections.append((f"carehubd stderr: {b.name} (run {b.runs})", b.log_tail()))
