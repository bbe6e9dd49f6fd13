"""The judge: grades one submission with the course's checks, computed here, on proxies of the learner's code.

The judge never runs learner code. It plans the submission (:mod:`.plan`), has a sandboxed worker
(:mod:`.sandbox`, forked from the zygote the judge started before it read anything: :mod:`.zygote`) execute
the notebook's code cells, and runs every ``grader.check`` of the *source* notebook's grade cells (hidden
ones included) in this process, on proxies (:mod:`.proxy`) of the objects the worker holds at that cell.
Each check is judged on its own: a cell or a call that hangs or kills the worker costs only what it touched;
the next check gets a fresh worker, which re-runs the cells and skips the ones that hung or crashed it.

``python -m dropout_course.instructor.judge`` serves ``dropout-course grade`` (:mod:`.autograde`): it reads one
JSON task per line on stdin and writes JSON events (one per check as soon as it is judged, then the row)
on a private copy of stdout, which the worker never holds.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import traceback
from pathlib import Path

from . import plan, zygote
from .proxy import Client, WorkerLost
from .sandbox import start

DEFAULT_CELL_TIMEOUT = 120.0
SNAPSHOT_DEADLINE = 30.0


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line of printable characters (a learner's message cannot move the instructor's
    terminal cursor or hide rows with escape sequences), cut to ``limit`` characters."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(info: dict) -> str:
    where = f" ({info.get('where')})" if info.get("where") else ""
    message = one_line(info.get("message", ""), 120)
    return f"{info.get('type', 'Exception')}{': ' + message if message else ''}{where}"


class Session:
    """The worker of one submission: boots it (cells run, candidates kept) and reboots it after a loss."""

    def __init__(self, steps: list[plan.Step], cell_timeout: float) -> None:
        self.steps = steps
        self.cell_timeout = cell_timeout
        self.bad: dict[int, str] = {}  # cell index -> why it is skipped (it hung or killed the worker)
        self.cell_errors: dict[int, str] = {}
        self.snapshots: dict[int, dict] = {}
        self.client: Client | None = None
        self.leftovers = 0
        self.boots = 0

    def ensure(self) -> Client:
        if self.client is not None and not self.client.broken:
            return self.client
        return self.boot()

    def boot(self) -> Client:
        self.close()
        for _ in range(len(self.steps) + 1):
            self.boots += 1
            client = Client(start())
            self.client, self.snapshots = client, {}
            failed = None
            for step in self.steps:
                if step.index in self.bad:
                    continue
                try:
                    if step.checks:
                        names = {}
                        for k, call in enumerate(step.checks):
                            names[f"{k}:"] = call.candidate
                            names.update({f"{k}:{key}": expr for key, expr in call.extra.items()})
                        reply = client.request("snapshot", names, deadline=SNAPSHOT_DEADLINE)
                        self.snapshots[step.index] = reply.get("items", {})
                    else:
                        reply = client.request("exec", step.index, step.code, deadline=self.cell_timeout)
                        if not reply.get("ok"):
                            self.cell_errors[step.index] = describe_error(reply.get("error", {}))
                        else:
                            self.cell_errors.pop(step.index, None)
                except WorkerLost as exc:
                    failed = step
                    self.bad[step.index] = str(exc)
                    break
            if failed is None:
                return client
            self.close()
        raise WorkerLost("the worker could not get through the notebook")

    def close(self) -> None:
        if self.client is not None:
            self.client.lose("closed")
            self.leftovers += self.client.leftovers
            self.client = None


def _label(step: plan.Step) -> str:
    return f"cell {step.index}" + (f" ({step.grade_id})" if step.grade_id else "")


def judge_notebook(
    raw: bytes,
    path: str,
    exercise: str | None = None,
    source_dir: Path | None = None,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    on_check=None,
    call_timeout: float | None = None,
) -> dict:
    """Grade one submission (its bytes); return its row.

    ``on_check(name, score, exercise)`` is called as each check is judged, and once first with ``name=None``
    and ``score={check: max points}`` (the plan).
    """
    from ..grading.core import load_checks
    from .release import repo_root

    source_dir = Path(source_dir or repo_root() / "exercises" / "source")
    row: dict = {"submission": path, "exercise": "", "total": 0.0, "max_total": 0.0, "status": "error"}
    row.update(reason="", integrity="", scores={}, notes=[])
    try:
        nb, notes = plan.parse_submission(raw)
    except ValueError as exc:
        row["reason"] = str(exc)
        row.pop("scores"), row.pop("notes")
        return row
    known = plan.sources(source_dir)
    if exercise is not None and exercise not in known:
        row["reason"] = f"unknown exercise {exercise!r} (--exercise); known: {', '.join(sorted(known))}"
        row.pop("scores"), row.pop("notes")
        return row
    exercise, more = plan.choose_exercise(nb, Path(path), known, exercise)
    notes += more
    if exercise is None:
        row["reason"] = (
            "cannot tell which exercise this is (no release metadata, no known grade ids): use --exercise"
        )
        row.pop("scores"), row.pop("notes")
        return row
    try:
        specs = load_checks(exercise)
    except ValueError as exc:
        row["reason"] = one_line(str(exc))
        row.pop("scores"), row.pop("notes")
        return row
    row["exercise"] = exercise
    row["max_total"] = float(sum(s.max_score for s in specs.values()))
    if on_check is not None:  # "plan": what a row cut short still needs (every check column at 0)
        on_check(None, {name: spec.max_score for name, spec in specs.items()}, exercise)
    graded, more = plan.build_graded_notebook(nb, known[exercise])
    notes += more
    steps = plan.steps(graded, known[exercise])
    session = Session(steps, cell_timeout)
    not_run: list[str] = []
    try:
        _run_checks(session, steps, exercise, row, not_run, on_check, call_timeout)
    finally:
        session.close()
    for index, why in session.bad.items():
        step = next(s for s in steps if s.index == index)
        notes.append(f"{_label(step)} skipped: {one_line(why, 120)}")
    for index, error in sorted(session.cell_errors.items()):
        step = next(s for s in steps if s.index == index)
        if step.learner or step.grade_id:
            notes.append(f"{_label(step)} raised {error}")
    if session.leftovers:
        row["integrity"] = f"left {session.leftovers} background process(es) running after grading (killed)"
    notes += row.pop("notes")
    row["status"] = "incomplete" if not_run else "graded"
    if not_run:
        notes.insert(0, "not judged: " + "; ".join(not_run))
    row["reason"] = one_line("; ".join(notes), 600)
    scores = row.pop("scores")
    for name, spec in specs.items():
        row[name] = min(float(scores.get(name, 0.0)), spec.max_score)
    row["total"] = float(sum(row[name] for name in specs))
    return row


def _run_checks(session, steps, exercise, row, not_run, on_check, call_timeout) -> None:
    from ..grading.core import Grader

    grader = Grader(exercise) if call_timeout is None else Grader(exercise, time_limit=call_timeout)
    for step in [s for s in steps if s.checks]:
        for k, call in enumerate(step.checks):
            if call.name not in grader.specs:
                continue
            try:
                client = session.ensure()
            except WorkerLost as exc:
                not_run.append(f"{call.name} ({one_line(str(exc), 80)})")
                continue
            items = session.snapshots.get(step.index)
            if items is None:
                why = session.bad.get(step.index) or "its cell was never reached"
                not_run.append(f"{call.name} ({one_line(why, 80)})")
                continue
            wanted = {"": f"{k}:", **{key: f"{k}:{key}" for key in call.extra}}
            missing = next(
                (
                    items.get(v, {}).get("missing", {})
                    for v in wanted.values()
                    if "value" not in items.get(v, {})
                ),
                None,
            )
            if missing is not None:  # judged: nothing to check (the learner's cell did not define it)
                row["notes"].append(
                    f"{call.name}: 0, `{call.candidate}` is undefined ({describe_error(missing)})"
                )
                score = 0.0
            else:
                try:
                    candidate = client.decode(items[wanted[""]]["value"])
                    extra = {key: client.decode(items[v]["value"]) for key, v in wanted.items() if key}
                except WorkerLost as exc:
                    not_run.append(f"{call.name} ({one_line(str(exc), 80)})")
                    continue
                client.check = (exercise, call.name)

                def seed_rng(seed, client=client):
                    client.request("seed", int(seed))

                names = {call.candidate, *call.extra.values()}
                source = plan.learner_source(steps, names)
                result = grader.check(call.name, candidate, source=source, seed_rng=seed_rng, **extra)
                client.check = None
                score = float(result.score)
            row["scores"][call.name] = score
            if on_check is not None:
                on_check(call.name, score, exercise)


def reset_torch_globals() -> None:
    """Undo global torch state a submission could have changed in this process (global module hooks,
    default dtype, grad mode), so that it cannot change how the next submissions are judged."""
    import torch
    from torch.nn.modules import module

    for name in dir(module):
        value = getattr(module, name)
        if name.startswith("_global_") and isinstance(value, dict):
            value.clear()
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)


def serve(rfile, wfile) -> None:
    """Grade tasks (JSON lines on ``rfile``) one after the other; events as JSON lines on ``wfile``."""
    for line in rfile:
        if not line.strip():
            continue
        task = json.loads(line)
        task_id = task.get("id")

        def emit(event: dict, task_id=task_id) -> None:
            wfile.write(json.dumps({"id": task_id, **event}) + "\n")
            wfile.flush()

        try:
            row = judge_notebook(
                base64.b64decode(task["data"]),
                task["path"],
                task.get("exercise"),
                Path(task["source"]) if task.get("source") else None,
                float(task.get("timeout") or DEFAULT_CELL_TIMEOUT),
                on_check=lambda name, score, exercise: emit(
                    {"event": "check", "check": name, "score": score, "exercise": exercise}
                ),
                call_timeout=float(task["call_timeout"]) if task.get("call_timeout") else None,
            )
        except Exception as exc:  # noqa: BLE001 - a judge bug still gives a row
            traceback.print_exc()
            row = {
                "submission": task.get("path", ""),
                "status": "error",
                "reason": f"internal grading error: {type(exc).__name__}: {one_line(str(exc), 150)}",
            }
        reset_torch_globals()
        emit({"event": "row", "row": row})


def main() -> int:
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints go to stderr; the events channel is private
    sys.stdout = sys.stderr
    os.environ.pop("DROPOUT_COURSE_RESULTS", None)
    zygote.preload()
    zygote.fork_early()  # before any source notebook or submission is read: workers never hold them
    serve(sys.stdin, events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
