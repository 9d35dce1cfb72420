"""HyperQuest's HTTP server: the JSON API (and the page, when built) on Starlette/uvicorn.

./launch.sh hyperquest experiments/hyperquest/game.py[:tiny] [--port=8080]
    [--host=127.0.0.1] [--workdir=runs/hyperquest]

JSON API (bodies and answers are JSON; a broken rule is a 4xx `{"error": "rule '...': ..."}`
and leaves the game unchanged; an unknown game is 404):
  POST /api/games                {"player", "background"?, "seed"?} -> {"id", "dataset", "choices"}
  POST /api/games/{id}/start     {"width", "lr", "depth", "dropout"} -> state after epoch 1
  POST /api/games/{id}/actions   {"action": "continue"|"revert"|"done", "changes"?: {name: "up"|"down"|"same"}} -> state
  GET  /api/games/{id}           -> state (epoch, actions_used, config, next_values, history, ...)
  GET  /api/games/{id}/progress  -> server-sent events {"training", "fraction"} of the running epoch
  GET  /api/leaderboard          -> [{"player", "kind", "best_val_acc", "epochs", "actions"}, ...]
  GET  /api/export.csv           -> every finished game with questionnaire answers and scores
  GET  /api/choices              -> the stage-1 choices
  GET  /api/datasets/{name}      -> the dataset's statistics; /examples.png: images per class
The page (`/`, static/: HTML, CSS and JS, nothing from a CDN) plays through this API.
Training runs in a worker thread; the server listens on 127.0.0.1 unless --host says otherwise.
"""
from __future__ import annotations

import asyncio
import json
import os

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jaxseg.errors import JaxsegError, RuleError, UnknownGameError
from jaxseg.hyperquest import rules
from jaxseg.hyperquest.engine import HyperQuest

DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKDIR = "127.0.0.1", 8080, "runs/hyperquest"
STATIC = os.path.join(os.path.dirname(__file__), "static")
_FIELDS = {"games": ("player", "background", "seed"),
           "start": ("width", "lr", "depth", "dropout"),
           "actions": ("action", "changes")}


def _error(status: int, message: str) -> JSONResponse:
  return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request, kind: str) -> dict:
  """The request's JSON object, with only the fields `kind` allows (RuleError otherwise)."""
  try:
    body = json.loads(await request.body() or b"{}")
  except (ValueError, UnicodeDecodeError):
    raise RuleError("rule 'request': the body is not valid JSON") from None
  if not isinstance(body, dict):
    raise RuleError("rule 'request': the body must be a JSON object")
  unknown = sorted(set(body) - set(_FIELDS[kind]))
  if unknown and kind != "start":  # stage 1 names its own unknown hyperparameters
    raise RuleError(f"rule 'request': unknown field(s) {unknown}; expected some of "
                    f"{list(_FIELDS[kind])}")
  return body


def create_app(hq: HyperQuest) -> Starlette:
  """The Starlette app serving `hq`'s games."""

  async def new_game(request):
    body = await _body(request, "games")
    return JSONResponse(await run_in_threadpool(
        hq.new_game, body.get("player"), body.get("background"), body.get("seed")))

  async def start(request):
    body = await _body(request, "start")
    return JSONResponse(await run_in_threadpool(hq.start, request.path_params["id"], body))

  async def act(request):
    body = await _body(request, "actions")
    return JSONResponse(await run_in_threadpool(
        hq.act, request.path_params["id"], body.get("action"), body.get("changes")))

  async def state(request):
    return JSONResponse(await run_in_threadpool(hq.state, request.path_params["id"]))

  async def leaderboard(request):
    del request
    board = await run_in_threadpool(hq.leaderboard)
    return JSONResponse([{k: e[k] for k in ("player", "kind", "best_val_acc", "epochs",
                                            "actions")} for e in board])

  async def export(request):
    del request
    return Response(await run_in_threadpool(hq.export_csv), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="hyperquest.csv"'})

  async def progress(request):
    game_id = request.path_params["id"]
    await run_in_threadpool(hq.state, game_id)  # 404 for an unknown game

    async def events():
      seen_training, idle = False, 0
      while idle < 40 and not await request.is_disconnected():
        p = hq.progress(game_id)
        yield f"data: {json.dumps(p)}\n\n"
        if p["training"]:
          seen_training, idle = True, 0
        elif seen_training:
          return
        else:
          idle += 1
        await asyncio.sleep(0.25)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})

  async def dataset(request):
    return JSONResponse(await run_in_threadpool(hq.dataset_summary,
                                                request.path_params["name"]))

  async def examples(request):
    png = await run_in_threadpool(hq.examples_png, request.path_params["name"])
    return Response(png, media_type="image/png")

  async def choices(request):
    del request
    return JSONResponse({k: list(v) for k, v in rules.STAGE1_CHOICES.items()})

  async def page(request):
    del request
    return FileResponse(os.path.join(STATIC, "index.html"))

  async def rule_error(request, exc):
    del request
    return _error(400, str(exc))

  async def unknown_game(request, exc):
    del request
    return _error(404, str(exc))

  async def jaxseg_error(request, exc):
    del request
    return _error(500, str(exc))

  async def http_error(request, exc):
    del request
    return _error(exc.status_code, exc.detail)

  routes = [
      Route("/api/games", new_game, methods=["POST"]),
      Route("/api/games/{id}/start", start, methods=["POST"]),
      Route("/api/games/{id}/actions", act, methods=["POST"]),
      Route("/api/games/{id}/progress", progress, methods=["GET"]),
      Route("/api/games/{id}", state, methods=["GET"]),
      Route("/api/leaderboard", leaderboard, methods=["GET"]),
      Route("/api/choices", choices, methods=["GET"]),
      Route("/api/export.csv", export, methods=["GET"]),
      Route("/api/datasets/{name}", dataset, methods=["GET"]),
      Route("/api/datasets/{name}/examples.png", examples, methods=["GET"]),
      Route("/", page, methods=["GET"]),
      Mount("/static", StaticFiles(directory=STATIC), name="static"),
  ]
  return Starlette(routes=routes, exception_handlers={
      RuleError: rule_error, UnknownGameError: unknown_game, JaxsegError: jaxseg_error,
      HTTPException: http_error})


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from jaxseg import cli  # pylint: disable=g-import-not-at-top
  config = cli.loaded_config(argv)
  import uvicorn  # pylint: disable=g-import-not-at-top
  cli.enable_compilation_cache()
  f = flags.FLAGS
  try:
    app = create_app(HyperQuest(config, f.workdir))
  except JaxsegError as e:
    cli.fail(str(e))
  print(f"HyperQuest: http://{f.host}:{f.port}/ (workdir {f.workdir})", flush=True)
  uvicorn.run(app, host=f.host, port=f.port, log_level="warning")


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from jaxseg import cli  # pylint: disable=g-import-not-at-top
  cli.define_config_file("config", "HyperQuest game config (experiments/hyperquest/game.py).")
  flags.DEFINE_string("host", DEFAULT_HOST, "Address to listen on (default: this machine "
                      "only).")
  flags.DEFINE_integer("port", DEFAULT_PORT, "Port to listen on.")
  flags.DEFINE_string("workdir", DEFAULT_WORKDIR, "Where games, checkpoints and the "
                      "leaderboard (SQLite) are kept.")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  from jaxseg import cli as _cli  # pylint: disable=g-import-not-at-top
  _cli.quiet_startup()
  _define_flags()
  _cli.run(main)
