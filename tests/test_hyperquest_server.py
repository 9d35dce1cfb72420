"""HyperQuest's HTTP JSON API (Starlette's test client) and its server process (uvicorn
on a free port, listening on 127.0.0.1 by default)."""
import concurrent.futures
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest

with warnings.catch_warnings():  # starlette 1.10 suggests httpx2 over httpx; both work
  warnings.simplefilter("ignore")
  from starlette.testclient import TestClient

from jaxseg.hyperquest import HyperQuest
from jaxseg.hyperquest.server import create_app
from tests.conftest import REPO
from tests.test_hyperquest import GAME_CONFIG, START, game_config

NAME = "<img src=x onerror=alert(1)>&amp;"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def server_process(tmp_path_factory):
  """`python -m jaxseg.hyperquest.server` without --host on a free port, started first
  so that it boots while the other tests of this module run; checked by the last test."""
  port = _free_port()
  workdir = tmp_path_factory.mktemp("quest_server")
  with open(workdir / "server.log", "w+") as log:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxseg.hyperquest.server", f"--config={GAME_CONFIG}:tiny",
         f"--port={port}", f"--workdir={workdir}"], cwd=REPO, stdout=log,
        stderr=subprocess.STDOUT)
    yield proc, port, log
    proc.kill()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("quest_tfds"))
  hq = HyperQuest(game_config(data_dir, enabled=False),
                  str(tmp_path_factory.mktemp("quest_api")))
  with TestClient(create_app(hq)) as c:
    yield c


@pytest.fixture(scope="module")
def game(client):
  """A game after start and one continue."""
  r = client.post("/api/games", json={"player": NAME, "background": {"years": 3},
                                      "seed": 11})
  assert r.status_code == 200, r.text
  game_id = r.json()["id"]
  assert client.post(f"/api/games/{game_id}/start", json=START).status_code == 200
  assert client.post(f"/api/games/{game_id}/actions",
                     json={"action": "continue", "changes": {"lr": "down"}}).status_code == 200
  return game_id


def test_a_game_through_the_api(client, game):
  state = client.get(f"/api/games/{game}").json()
  for key in ("epoch", "actions_used", "config", "next_values", "history", "best_train_acc",
              "best_val_acc", "baseline_val_acc", "reverts_in_a_row", "finished"):
    assert key in state
  assert (state["epoch"], state["actions_used"], state["config"]["lr"]) == (2, 1, 0.003)
  assert [h["action"] for h in state["history"]] == ["start", "continue"]
  assert state["next_values"]["lr"]["down"] == 0.001
  r = client.post(f"/api/games/{game}/actions", json={"action": "revert"})
  assert r.json()["epoch"] == 1 and r.json()["config"]["lr"] == 0.01
  r = client.post(f"/api/games/{game}/actions", json={"action": "done"})
  assert r.json()["finished"] is True
  board = client.get("/api/leaderboard")
  assert board.headers["content-type"] == "application/json"
  entry = [e for e in board.json() if e["player"] == NAME]
  assert entry == [{"player": NAME, "kind": "human", "best_val_acc": state["best_val_acc"],
                    "epochs": 2, "actions": 3}]
  # the name is data, never markup: returned verbatim inside JSON only
  assert "<img" not in board.text.replace(NAME, "")


def test_export_csv_has_finished_games_and_answers(client, game):
  formula = client.post("/api/games", json={"player": "=HYPERLINK(1)"}).json()["id"]
  client.post(f"/api/games/{formula}/start", json=START)
  client.post(f"/api/games/{formula}/actions", json={"action": "done"})
  r = client.get("/api/export.csv")
  assert r.headers["content-type"].startswith("text/csv")
  rows = {row["id"]: row for row in csv.DictReader(io.StringIO(r.text))}
  assert game in rows and formula in rows
  row = rows[game]
  assert (row["player"], row["kind"], row["epochs"], row["actions"]) == (NAME, "human", "2", "3")
  assert row["background_years"] == "3" and row["background_education"] == ""
  assert float(row["best_val_acc"]) == client.get(f"/api/games/{game}").json()["best_val_acc"]
  assert rows[formula]["player"] == "'=HYPERLINK(1)"  # no spreadsheet formulas


def test_new_game_answers_dataset_and_choices(client):
  r = client.post("/api/games", json={"player": "ida"})
  body = r.json()
  assert set(body) == {"id", "dataset", "choices"}
  assert body["choices"] == {"width": [32, 64, 128], "lr": [0.1, 0.01, 0.001],
                             "depth": [2, 4, 8], "dropout": [0.0, 0.5]}
  assert body["dataset"]["num_classes"] == 10


@pytest.mark.parametrize("path, body, status, rule", [
    ("/api/games", {"player": ""}, 400, "player"),
    ("/api/games", {"player": "x", "colour": 1}, 400, "request"),
    ("/api/games", {"player": "x", "seed": "7"}, 400, "seed"),
    ("/api/games/{id}/start", START, 400, "stage 1"),
    ("/api/games/{id}/actions", {"action": "continue", "changes": {"lr": "up", "mood": "up"}},
     400, "changes"),
    ("/api/games/{id}/actions", {"action": "continue", "changes": {"width": "down"}}, 400,
     "range"),
    ("/api/games/{id}/actions", {"action": "revert", "changes": {"lr": "up"}}, 400, "changes"),
    ("/api/games/{id}/actions", {"action": "fly"}, 400, "action"),
    ("/api/games/{id}/actions", [1, 2], 400, "request"),
])
def test_violations_are_4xx_naming_the_rule(client, path, body, status, rule):
  game_id = client.post("/api/games", json={"player": "jo", "seed": 1}).json()["id"]
  client.post(f"/api/games/{game_id}/start", json=START)
  before = client.get(f"/api/games/{game_id}").json()
  r = client.post(path.format(id=game_id), json=body)
  assert r.status_code == status and r.headers["content-type"] == "application/json"
  assert set(r.json()) == {"error"} and f"rule '{rule}'" in r.json()["error"]
  assert client.get(f"/api/games/{game_id}").json() == before


def test_after_done_unknown_game_and_route(client):
  game = client.post("/api/games", json={"player": "ned"}).json()["id"]
  client.post(f"/api/games/{game}/start", json=START)
  client.post(f"/api/games/{game}/actions", json={"action": "done"})
  r = client.post(f"/api/games/{game}/actions", json={"action": "continue"})
  assert r.status_code == 400 and "rule 'done'" in r.json()["error"]
  r = client.get("/api/games/0000")
  assert r.status_code == 404 and "no game with id '0000'" in r.json()["error"]
  r = client.post("/api/games/x/actions", content=b"{not json")
  assert r.status_code == 400 and "rule 'request'" in r.json()["error"]
  assert client.get("/api/nothing").status_code == 404
  assert client.get("/api/nothing").json() == {"error": "Not Found"}


def test_two_games_at_once_do_not_mix(client):
  ids = [client.post("/api/games", json={"player": p, "seed": s}).json()["id"]
         for p, s in (("kim", 21), ("lee", 22))]
  choices = [START, {**START, "lr": 0.001, "dropout": 0.5}]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    states = list(pool.map(lambda a: client.post(f"/api/games/{a[0]}/start", json=a[1]).json(),
                           zip(ids, choices)))
  for game_id, choice, state in zip(ids, choices, states):
    assert state["id"] == game_id and state["epoch"] == 1
    assert {k: state["config"][k] for k in choice} == choice
  assert [s["player"] for s in states] == ["kim", "lee"]


def test_progress_stream_of_an_idle_game(client, game):
  with client.stream("GET", f"/api/games/{game}/progress") as r:
    assert r.headers["content-type"].startswith("text/event-stream")
    first = next(line for line in r.iter_lines() if line)
  assert first == 'data: {"training": false, "fraction": 0.0}'


def test_the_page_and_its_data(client):
  page = client.get("/")
  assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
  assert "<script src=\"/static/app.js\"></script>" in page.text
  assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN
  script = client.get("/static/app.js")
  assert script.status_code == 200 and "textContent" in script.text
  for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
    assert sink not in script.text  # names and answers are shown as text, never markup
  assert client.get("/static/style.css").status_code == 200
  summary = client.get("/api/datasets/shapes10").json()
  assert summary["class_names"][:2] == ["circle", "ring"] and summary["num_train"] == 240
  png = client.get("/api/datasets/shapes10/examples.png")
  assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
  r = client.get("/api/datasets/cifar10")
  assert r.status_code == 404 and "no dataset 'cifar10'" in r.json()["error"]
  assert client.get("/api/choices").json()["lr"] == [0.1, 0.01, 0.001]


def _listening_addresses(port: int) -> set[str]:
  """Local addresses (hex, /proc/net/tcp) of the sockets listening on `port`."""
  found = set()
  for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    if os.path.exists(table):
      for line in open(table).read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.rsplit(":", 1)
        if state == "0A" and int(hex_port, 16) == port:
          found.add(address)
  return found


def _wait_for_server(proc, port, log, seconds=90):
  deadline = time.time() + seconds
  while True:
    try:
      with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/leaderboard", timeout=2):
        return
    except OSError:
      assert proc.poll() is None, (log.seek(0), log.read())[1]
      assert time.time() < deadline, f"the server did not answer within {seconds} s"
      time.sleep(0.5)


def test_server_process_listens_on_localhost_by_default(server_process):
  proc, port, log = server_process
  _wait_for_server(proc, port, log)
  with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/leaderboard", timeout=5) as r:
    assert r.read() == b"[]"
  assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only


# -- the page in a real browser (headless Chromium through Selenium) ---------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and "
                    "chromium-driver (.ci/run installs them)")
def test_a_whole_game_in_the_browser(server_process):
  """Questionnaire, stage 1, three Continues (one with a learning-rate Down), a Revert and
  Done through the page; the leaderboard then shows the player's name as text."""
  webdriver = pytest.importorskip("selenium.webdriver")
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import Select, WebDriverWait  # pylint: disable=g-import-not-at-top
  proc, port, log = server_process
  _wait_for_server(proc, port, log)
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1100,1600"):
    options.add_argument(arg)
  driver = webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
  wait = WebDriverWait(driver, 120)
  name = "<i>zoe</i> & co"
  try:
    driver.get(f"http://127.0.0.1:{port}/")
    driver.find_element(By.ID, "player").send_keys(name)
    Select(driver.find_element(By.ID, "education")).select_by_visible_text("master")
    driver.find_element(By.ID, "years").send_keys("3")
    Select(driver.find_element(By.ID, "experience")).select_by_value("4")
    driver.find_element(By.CSS_SELECTOR, "input[name=kinds][value=cnn]").click()
    driver.find_element(By.ID, "new-game").click()
    wait.until(lambda d: d.find_element(By.ID, "stage1").is_displayed())
    assert driver.find_element(By.ID, "dataset-name").text == "shapes10"
    for key, value in (("width", "32"), ("lr", "0.01"), ("depth", "2"), ("dropout", "0")):
      Select(driver.find_element(By.ID, f"choice-{key}")).select_by_value(value)
    driver.find_element(By.ID, "start").click()

    def epoch_is(text):
      return lambda d: (d.find_element(By.ID, "epoch").text == text
                        and d.find_element(By.ID, "continue").is_enabled())

    wait.until(epoch_is("1"))
    for epoch, lr_move in ((2, None), (3, "down"), (4, None)):
      if lr_move:
        driver.find_element(By.CSS_SELECTOR, f"input[name=move-lr][value={lr_move}]").click()
      driver.find_element(By.ID, "continue").click()
      wait.until(epoch_is(str(epoch)))
    history = driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[4].text for r in history] == [
        "0.01", "0.01", "0.003", "0.003"]
    if os.environ.get("HYPERQUEST_SCREENSHOT"):  # the README's picture
      driver.execute_script("window.scrollTo(0, document.getElementById('play').offsetTop)")
      driver.save_screenshot(os.environ["HYPERQUEST_SCREENSHOT"])
    driver.find_element(By.ID, "revert").click()
    wait.until(epoch_is("3"))
    driver.find_element(By.ID, "done").click()
    wait.until(lambda d: d.find_element(By.ID, "epoch").text == "3 (finished)")
    wait.until(lambda d: any(r.find_elements(By.TAG_NAME, "td")[1].text == name
                             for r in d.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")))
    assert not driver.find_elements(By.CSS_SELECTOR, "#leaderboard i")  # text, not markup
    assert not driver.find_element(By.ID, "error").is_displayed()
  finally:
    driver.quit()
  with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/leaderboard") as r:
    board = json.loads(r.read())
  assert [(e["player"], e["epochs"], e["actions"]) for e in board] == [(name, 4, 5)]
