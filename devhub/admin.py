"""Admin endpoints under /_devhub/: fault rules and the request log, behind the admin token."""

from __future__ import annotations

import hmac

from .app import App, Request
from .damage import apply_damage
from .wire import HubError, Response, json_response


def _require_admin(app: App, req: Request) -> None:
    expected = app.config.admin_token
    if not expected:
        raise HubError(404, "The admin API is off (start devhub with --admin-token)")
    scheme, _, token = (req.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise HubError(401, "Admin token required")


def health(app: App, req: Request) -> Response:
    return json_response({"status": "ok"})


def get_faults(app: App, req: Request) -> Response:
    _require_admin(app, req)
    return json_response(app.faults.snapshot())


def add_faults(app: App, req: Request) -> Response:
    _require_admin(app, req)
    try:
        rules = app.faults.parse(req.body.json())
    except (TypeError, ValueError) as err:
        raise HubError(400, f"Invalid fault rule: {err}") from err
    for rule in rules:
        if rule.immediate:
            # Fails the whole call if the file is not there.
            apply_damage(app.storage, app.xet, rule)
    added = app.faults.add(rules)
    return json_response([rule.to_json() for rule in added])


def clear_faults(app: App, req: Request) -> Response:
    _require_admin(app, req)
    app.faults.clear()
    return json_response([])


def get_log(app: App, req: Request) -> Response:
    _require_admin(app, req)
    return json_response(app.reqlog.entries())
