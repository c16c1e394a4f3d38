"""`thresher review`: a small local web server over the catalog's review queue.

One page (page.html/.css/.js) and a JSON API. Every decision is one short catalog transaction,
committed before the response is sent, so killing the server (kill -9 included) loses nothing
and a restart reopens at the first undecided file. Images are served by catalog id only: no
request ever names a path. Bound to loopback unless --host is given, and then only with a
token that every request must carry.

Every answer, errors included, carries the CSP and nosniff headers. A state-changing request
(POST, DELETE) must come from the page itself: an Origin other than the server's own, or a
Sec-Fetch-Site other than same-origin, is refused, and a POST must be application/json of at
most MAX_BODY_BYTES, so a page elsewhere cannot submit a form or a huge body to it.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from thresher.catalog import Catalog, EmbeddingRows
from thresher.config import DEFAULT_WORKSPACE
from thresher.errors import ThresherError
from thresher.files import readable_name
from thresher.images import thumbnail_jpeg
from thresher.issue_model import ACTIONS, DUPLICATE_KINDS, GROUP_KINDS, default_fate
from thresher.knn import knn_index
from thresher.labels import label_problem
from thresher.review.evidence import label_choices, neighbours
from thresher.review.groups import orphan_refusal

TOKEN_COOKIE = "thresher_token"
TOKEN_HEADER = "x-thresher-token"
NEIGHBOURS = 8
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
MAX_BODY_BYTES = 64 * 1024  # a decision is ~100 bytes
MIN_TOKEN_CHARS = 16
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}


class DecisionIn(BaseModel):
    """The body of POST /api/decisions."""

    model_config = ConfigDict(extra="forbid")

    image_id: int = Field(ge=0)
    decision: Literal["keep", "drop", "relabel"]
    label: str | None = Field(None, max_length=200)

    @field_validator("label")
    @classmethod
    def _clean_label(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        problem = label_problem(v)
        if problem:
            raise ValueError(f"the label {problem}")
        return v

    @model_validator(mode="after")
    def _label_with_relabel(self):
        if self.decision == "relabel" and self.label is None:
            raise ValueError("'relabel' needs a label")
        if self.decision != "relabel" and self.label is not None:
            raise ValueError(f"'{self.decision}' takes no label")
        return self


class PastDecision(BaseModel):
    """One member's decision to restore (undo of a group decision); decision None = undecided."""

    model_config = ConfigDict(extra="forbid")

    image_id: int = Field(ge=0)
    decision: Literal["keep", "drop", "relabel"] | None
    label: str | None = Field(None, max_length=200)


class GroupDecisionIn(BaseModel):
    """The body of POST /api/groups/{group}: one decision about a whole duplicate group.

    keep_one: keep `image_id`, drop the other members. not_copies: keep every member.
    drop_all: drop every member (the one way to leave a group with no copy).
    restore: put back `previous` (the page's undo of a group decision).
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["keep_one", "not_copies", "drop_all", "restore"]
    image_id: int | None = Field(None, ge=0)
    previous: list[PastDecision] | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _fields_per_action(self):
        if (self.action == "keep_one") != (self.image_id is not None):
            raise ValueError("'keep_one' and only it takes an image_id")
        if (self.action == "restore") != (self.previous is not None):
            raise ValueError("'restore' and only it takes 'previous'")
        return self


def fate_text(issues, keep_in_group: bool = False) -> str:
    """What export does to a file nobody decides, in words ("dropped as upscaled")."""
    kind = default_fate(issues)
    if kind is None:
        return "kept (the copy its group keeps)" if keep_in_group else "kept"
    how = "a copy" if ACTIONS[kind] == "keep one" else kind.replace("_", " ")
    return f"dropped as {how}" + (f" ({kind.replace('_', ' ')})" if how == "a copy" else "")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AsciiJSON(JSONResponse):
    """JSON in ASCII: a label or file name that is not UTF-8 survives the round trip.

    Such names are held with surrogate escapes; ASCII JSON writes those as \\udcXX escapes
    instead of failing, and a label sent back the same way decodes to the very same string.
    """

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


class ReviewState:
    """What every route shares: the catalog behind one lock, its columns, the neighbour index,
    the image cache, and who may ask (token, loopback hosts)."""

    def __init__(self, workspace: Path | str, token: str | None, loopback: bool, host: str | None):
        cat = Catalog(workspace, create=False)
        summary = cat.get_meta("clean_summary")
        if summary is None:
            cat.close()
            raise ThresherError(f"no review queue in {workspace} yet: run `thresher clean` first")
        self.cat = cat
        self.token, self.loopback = token, loopback
        self.allowed_hosts = _LOOPBACK_HOSTS | ({host} if host else set())
        self.col = cat.columns(["id", "path", "label", "status", "has_embedding"])
        ok = self.col["status"] == "ok"
        self.searchable = self.col["id"][ok & (self.col["has_embedding"] == 1)]
        self.matrix = cat.embeddings() if len(self.searchable) else None
        self.class_counts: dict[str, int] = summary.get("counts_after") or summary["counts_before"]
        self.lock = threading.Lock()  # one catalog connection, many request threads
        self.index = None  # the FAISS index, once built; until then a brute-force pass
        self.images = _ImageCache(Path(cat.get_meta("source")["root"]))
        if self.matrix is not None:
            # The same FAISS index clean's k-NN uses (IVF-PQ above 200,000 rows), built once
            # in the background; until it is ready, neighbours come from a brute-force pass.
            threading.Thread(target=self._build_index, name="neighbour-index", daemon=True).start()

    def _build_index(self) -> None:
        self.index = knn_index(EmbeddingRows(self.matrix, self.searchable))

    def row_of(self, image_id: int) -> int:
        """The row of `image_id` in the columns; 404 when the catalog has no such image."""
        i = int(np.searchsorted(self.col["id"], image_id))
        if i >= len(self.col["id"]) or self.col["id"][i] != image_id:
            raise HTTPException(404, f"no image with id {image_id} in the catalog")
        return i

    def group_view(self, group: int) -> dict:
        """The members of one duplicate group with what tells them apart, kept copy first."""
        cat = self.cat
        with self.lock:
            members = cat.group_members(group)
            if not members:
                raise HTTPException(404, f"no duplicate group {group}")
            ids = [m.id for m in members]
            rows = {m: cat.image(m) for m in ids}
            by_member: dict[int, list] = {m: [] for m in ids}
            decided: dict[int, tuple] = {}
            for x in cat.issues(ids):
                by_member[x.image_id].append((x.issue, bool(x.keep)))
                if x.decision:
                    decided[x.image_id] = (x.decision, x.decided_label)
        kept = next((m.id for m in members if m.keep), None)
        out = []
        for m in members:
            meta = rows[m.id]
            key = meta.get("pixel_checksum") or meta["checksum"]
            twins = [
                o
                for o in ids
                if o != m.id
                and key
                and (rows[o].get("pixel_checksum") or rows[o]["checksum"]) == key
            ]
            twin = (kept if kept in twins else twins[0]) if twins else None
            name = readable_name(_name(meta["path"]))
            out.append(
                {
                    "id": m.id,
                    "name": name,
                    "path": readable_name(meta["path"]),
                    "label": meta["label"] and readable_name(meta["label"]),
                    "keep": bool(m.keep),
                    "width": meta["width"],
                    "height": meta["height"],
                    "effective_short_side": meta.get("effective_short_side"),
                    "size_bytes": meta["size_bytes"],
                    "format": meta["format"],
                    "decision": decided.get(m.id, (None, None))[0],
                    "decided_label": decided.get(m.id, (None, None))[1],
                    "fate": fate_text(by_member[m.id], bool(m.keep)),
                    "same_pixels_as": twin
                    and (
                        readable_name(_name(rows[twin]["path"]))
                        + (" (the kept copy)" if twin == kept else "")
                    ),
                }
            )
        fields = ("width", "height", "effective_short_side", "size_bytes", "format", "label")
        differs = [f for f in fields if len({str(x[f]) for x in out}) > 1]
        return {"group": group, "members": out, "differs": differs, "issues": by_member}

    def refuse_orphan(self, group_ids, after: dict) -> None:
        """409 when `after` (member -> decision) would leave a group with no copy."""
        for g in group_ids:
            view = self.group_view(g)
            before = {
                m["id"]: m["decision"] and (m["decision"], m["decided_label"])
                for m in view["members"]
            }
            merged = {**before, **{k: v for k, v in after.items() if k in before}}
            why = orphan_refusal(view["issues"], before, merged)
            if why:
                raise HTTPException(409, why)

    def groups_of(self, image_id: int) -> list[int]:
        """The duplicate groups `image_id` belongs to."""
        with self.lock:
            rows = self.cat.issues([image_id])
        return sorted({x.grp for x in rows if x.issue in DUPLICATE_KINDS and x.grp is not None})


def _state(request: Request) -> ReviewState:
    return request.app.state.review


State = Annotated[ReviewState, Depends(_state)]


def make_app(
    workspace: Path | str = DEFAULT_WORKSPACE,
    token: str | None = None,
    loopback=True,
    host: str | None = None,
):
    """The review app over WORKSPACE's catalog (run `thresher clean` first).

    With `loopback`, only requests whose Host is localhost or `host` (the address served,
    127.0.0.2 say) are answered.
    """
    state = ReviewState(workspace, token, loopback, host)
    app = FastAPI(
        title="thresher review",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=AsciiJSON,
    )
    app.state.review = state
    app.state.catalog = state.cat
    app.middleware("http")(guard)
    app.exception_handler(RequestValidationError)(bad_request)
    app.exception_handler(HTTPException)(http_error)
    app.get("/", response_class=HTMLResponse)(page)
    app.get("/{name}", include_in_schema=False)(asset)
    app.get("/api/queue")(queue)
    app.get("/api/items/{image_id}")(item)
    app.get("/api/groups/{group}")(group_api)
    app.post("/api/groups/{group}")(decide_group)
    app.get("/api/images/{image_id}")(image)
    app.post("/api/decisions")(decide)
    app.delete("/api/decisions/{image_id}")(undecide)
    return app


async def guard(request: Request, call_next):
    """Every request: host, cross-site and token checks; the security headers on every answer."""
    response = await _checked(request.app.state.review, request, call_next)
    response.headers.update(_HEADERS)  # on every answer, a 401 or 403 included
    return response


async def _checked(state: ReviewState, request: Request, call_next):
    token = state.token
    if state.loopback and _host_name(request.headers.get("host", "")) not in state.allowed_hosts:
        # A page elsewhere that rebinds its DNS name to 127.0.0.1 must not reach the API.
        return JSONResponse({"error": "this server answers to localhost only"}, 403)
    refusal = _cross_site_refusal(request)
    if refusal:
        return JSONResponse({"error": refusal.why}, refusal.status)
    given = None
    if token:
        given = (
            request.headers.get(TOKEN_HEADER)
            or request.query_params.get("token")
            or request.cookies.get(TOKEN_COOKIE)
        )
        if not given or not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse(
                {"error": "a valid token is required: open the URL that review printed"}, 401
            )
    if token and request.url.path == "/" and request.query_params.get("token"):
        # Trade the token in the URL for a cookie, so it leaves the address bar and history.
        response = RedirectResponse("/", 303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response
    return await call_next(request)


async def bad_request(request: Request, exc: RequestValidationError):
    """A request the API cannot parse: 422 with one line naming each bad field."""
    return JSONResponse({"error": _describe(exc.errors())}, 422)


async def http_error(request: Request, exc: HTTPException):
    """Errors as {"error": ...}, like every other answer."""
    return JSONResponse({"error": exc.detail}, exc.status_code)


def page():
    """The review page."""
    return HTMLResponse(_asset("page.html"), headers={"Cache-Control": "no-store"})


def asset(name: str):
    """The page's script and style sheet; nothing else by name."""
    if name == "favicon.ico":
        return Response(status_code=204)
    if name not in _ASSETS:
        raise HTTPException(404, "not found")
    return Response(_asset(name), media_type=_ASSETS[name])


def queue(state: State, issue: str | None = None, label: str | None = None):
    """The review queue in order, filtered by issue and label, with the counts of each."""
    with state.lock:
        rows = state.cat.review_queue()
    issues_count: dict[str, int] = {}
    labels_count: dict[str, int] = {}
    items = []
    for r in rows:
        kinds = r.issues.split(",")
        for k in kinds:
            issues_count[k] = issues_count.get(k, 0) + 1
        lab = readable_name(r.label or "")  # JSON holds UTF-8 only
        labels_count[lab] = labels_count.get(lab, 0) + 1
        if (issue and issue not in kinds) or (label is not None and lab != label):
            continue
        items.append({"id": r.id, "decision": r.decision, "decided_label": r.decided_label})
    return {
        "total": len(rows),
        "decided": sum(1 for r in rows if r.decision),
        "items": items,
        "issues": dict(sorted(issues_count.items(), key=lambda kv: -kv[1])),
        "labels": dict(sorted(labels_count.items())),
        "classes": sorted(state.class_counts),
    }


def item(state: State, image_id: int):
    """One queued file: its facts, issues, decision, the labels to offer and its evidence."""
    col = state.col
    r = state.row_of(image_id)
    with state.lock:
        meta = state.cat.image(image_id)
        issue_rows = state.cat.issues([image_id])
    first = issue_rows[0] if issue_rows else None
    decision = (first.decision, first.decided_label) if first else (None, None)
    issues = [
        {
            "issue": x.issue,
            "confidence": x.confidence,
            "group": x.grp,
            "keep": bool(x.keep),
            # label_conflict suggests the kept copy's label: never the file's own.
            "suggested_label": None if x.suggested_label == meta["label"] else x.suggested_label,
            "reason": x.reason,
        }
        for x in sorted(issue_rows, key=lambda x: -x.confidence)
    ]
    kinds = [(x.issue, bool(x.keep)) for x in issue_rows]
    in_group = any(x.issue in DUPLICATE_KINDS for x in issue_rows)
    near = []
    if state.matrix is not None and col["has_embedding"][r] == 1:
        ids, sims = neighbours(state.index, state.matrix, state.searchable, image_id, NEIGHBOURS)
        near = [
            {"id": int(i), "label": col["label"][state.row_of(int(i))], "similarity": float(s)}
            for i, s in zip(ids, sims, strict=True)
        ]
    group = next((x["group"] for x in issues if x["issue"] in GROUP_KINDS), None)
    if group is not None:
        members = state.group_view(group)["members"]
        same = next(m["same_pixels_as"] for m in members if m["id"] == image_id)
        for x in issues:
            if x["issue"] == "exact_duplicate" and not x["keep"] and same:
                x["reason"] = f"same pixels as {same}"
        evidence = {
            "kind": "duplicates",
            "group": group,
            "title": f"its duplicate group ({len(members)} files, kept copy first; g compares)",
            "items": [m for m in members if m["id"] != image_id],
        }
    else:
        evidence = {
            "kind": "neighbours",
            "title": "its nearest neighbours" if near else "no embeddings: no neighbours",
            "items": near,
        }
    return {
        "id": image_id,
        "path": readable_name(meta["path"]),
        "name": readable_name(_name(meta["path"])),
        "label": meta["label"] and readable_name(meta["label"]),
        "width": meta["width"],
        "height": meta["height"],
        "size_bytes": meta["size_bytes"],
        "format": meta["format"],
        "status": meta["status"],
        "decision": decision[0],
        "decided_label": decision[1],
        "issues": issues,
        "choices": label_choices(
            meta["label"],
            [x["suggested_label"] for x in issues],
            [n["label"] for n in near],
            state.class_counts,
        ),
        "evidence": evidence,
        "group": group,
        "fate": fate_text(kinds, any(k and x in DUPLICATE_KINDS for x, k in kinds)),
        "in_group": in_group,
    }


def group_api(state: State, group: int):
    """One duplicate group's members, kept copy first, and which facts differ."""
    view = state.group_view(group)
    return {k: v for k, v in view.items() if k != "issues"}


def decide_group(state: State, group: int, body: GroupDecisionIn):
    """One decision about a whole duplicate group; answers what each member had before."""
    view = state.group_view(group)
    ids = [m["id"] for m in view["members"]]
    if body.action == "keep_one" and body.image_id not in ids:
        raise HTTPException(422, f"image {body.image_id} is not in duplicate group {group}")
    if body.action == "keep_one":
        after = {m: ("keep", None) if m == body.image_id else ("drop", None) for m in ids}
    elif body.action == "not_copies":
        after = {m: ("keep", None) for m in ids}
    elif body.action == "drop_all":
        after = {m: ("drop", None) for m in ids}
    else:
        after = {}
        for p in body.previous:
            if p.image_id not in ids:
                raise HTTPException(422, f"image {p.image_id} is not in duplicate group {group}")
            after[p.image_id] = None if p.decision is None else (p.decision, p.label)
        state.refuse_orphan([group], after)
    previous = []
    with state.lock:
        for m, d in after.items():
            old = state.cat.undecide(m) if d is None else state.cat.decide(m, d[0], d[1])
            previous.append({"image_id": m, "decision": old and old[0], "label": old and old[1]})
        total, decided = state.cat.review_progress()
    return {
        "group": group,
        "action": body.action,
        "previous": previous,
        "total": total,
        "decided": decided,
    }


def image(state: State, image_id: int, size: int = Query(1280, ge=32, le=4096)):
    """The pixels of a catalogued image, by id only, as a JPEG of at most `size` px."""
    r = state.row_of(image_id)
    col = state.col
    if col["status"][r] != "ok":
        raise HTTPException(404, f"image {image_id} has no pixels ({col['status'][r]})")
    data = state.images.get(image_id, col["path"][r], size)
    if data is None:
        raise HTTPException(404, f"image {image_id} cannot be read any more")
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


def decide(state: State, body: DecisionIn):
    """Keep, drop or relabel one file, committed before the answer."""
    state.row_of(body.image_id)
    if body.decision == "drop":
        state.refuse_orphan(state.groups_of(body.image_id), {body.image_id: ("drop", None)})
    with state.lock:
        previous = state.cat.decide(body.image_id, body.decision, body.label)
        total, decided = state.cat.review_progress()
    return {**body.model_dump(), **_previous(previous), "total": total, "decided": decided}


def undecide(state: State, image_id: int):
    """Take back one file's decision (the page's undo)."""
    state.row_of(image_id)
    state.refuse_orphan(state.groups_of(image_id), {image_id: None})
    with state.lock:
        previous = state.cat.undecide(image_id)
        total, decided = state.cat.review_progress()
    return {"image_id": image_id, **_previous(previous), "total": total, "decided": decided}


def serve(
    workspace: Path | str = DEFAULT_WORKSPACE,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    log=print,
) -> None:
    """Serve the review page until Ctrl-C. Port 0 picks a free port (the URL says which)."""
    import uvicorn

    loopback = is_loopback(host)
    if not loopback and not token:
        raise ThresherError(
            f"refusing to serve the catalog on {host}, which is not a loopback address, "
            "without a token: set THRESHER_REVIEW_TOKEN (or --token SECRET; every request must "
            "then carry it)"
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ThresherError(
            f"the review token is {len(token)} characters: use at least {MIN_TOKEN_CHARS} "
            "random ones, e.g. THRESHER_REVIEW_TOKEN=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe())')"
        )
    if not 0 <= port <= 65535:
        raise ThresherError(f"--port {port} is not a port: 0 to 65535 (0 picks a free one)")
    app = make_app(workspace, token, loopback, host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ThresherError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port "
            "(0 picks a free one)"
        ) from None
    bound = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{bound}/" + (f"?token={token}" if token else "")
    total, decided = app.state.catalog.review_progress()
    log(f"review: {url}")
    log(
        f"{total} files in the queue, {decided} decided. Each decision is saved as it is made; "
        "Ctrl-C stops the server."
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        app.state.catalog.close()


class _ImageCache:
    """JPEG renditions of catalog images, decoded on demand; the last few kept in memory."""

    def __init__(self, root: Path, keep: int = 64):
        self.root, self.keep = root, keep
        self._lru: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, image_id: int, rel_path: str, size: int) -> bytes | None:
        key = (image_id, size)
        with self._lock:
            if key in self._lru:
                self._lru.move_to_end(key)
                return self._lru[key]
        # Through the one safe reader: a file swapped for a FIFO or a device since the scan
        # cannot block or exhaust a request thread.
        data = thumbnail_jpeg(self.root / rel_path, size, quality=90)
        if data is None:
            return None
        with self._lock:
            self._lru[key] = data
            while len(self._lru) > self.keep:
                self._lru.popitem(last=False)
        return data


class Refusal(NamedTuple):
    """Why a request is answered with an error before it reaches the API."""

    status: int
    why: str


def _cross_site_refusal(request) -> Refusal | None:
    """A Refusal when a state-changing request may come from another site, else None.

    Browsers send Origin on every cross-origin POST/DELETE and Sec-Fetch-Site on all of them;
    the page's own fetches carry its own origin and 'same-origin'.
    """
    if request.method in _SAFE_METHODS:
        return None
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin in ("null", "") or origin.split("://", 1)[-1] != host:
            return Refusal(403, "cross-site request refused: open the review page itself")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return Refusal(403, "cross-site request refused: open the review page itself")
    if request.method == "POST":
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return Refusal(411, "a Content-Length is required")
        if int(length) > MAX_BODY_BYTES:
            return Refusal(413, f"the body is over {MAX_BODY_BYTES} bytes")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return Refusal(422, "the body must be application/json (Content-Type)")
    return None


def _asset(name: str) -> str:
    return resources.files("thresher.review").joinpath(name).read_text()


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]")[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _previous(previous) -> dict:
    if previous is None:
        return {"previous": None}
    return {"previous": {"decision": previous[0], "label": previous[1]}}


def _describe(errors) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)
