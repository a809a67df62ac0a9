"""Pages that await nothing rendered by a synchronous Jinja environment (SPEC §10).

Quart's Jinja environment is asynchronous: every chunk of a page is a step of an async
generator and every expression goes through `auto_await`. Most pages await nothing (the
context processors, which may, run before rendering), so they render with a synchronous
overlay of Quart's environment instead: the same loader, globals, filters and
autoescaping, templates compiled once for it. A page is rendered this way only when
neither it nor a template it extends, includes or imports names an async global, filter
or test (`passkeys_of`, say), and no value the view passes is an async function; the
others, and the mail templates, keep Quart's environment.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, Template, meta, nodes
from quart import render_template
from quart.globals import app_ctx
from quart.signals import before_render_template, template_rendered

if TYPE_CHECKING:
    from quart import Quart

PAGES = "auth_page_environment"  # app.extensions key
SYNCHRONOUS = "auth_pages_awaiting_nothing"  # app.extensions key: template name -> bool
TEMPLATES = "auth_page_templates"  # app.extensions key: template name -> compiled template
CACHE_SIZE = 400  # compiled templates kept (Jinja's default)


def page_environment(app: Quart) -> Environment:
    """The app's synchronous page environment, made the first time it is needed."""
    env: Environment | None = app.extensions.get(PAGES)
    if env is None:
        # A cache of its own: templates compiled for the async environment cannot run here.
        env = app.jinja_env.overlay(enable_async=False, cache_size=CACHE_SIZE)
        app.extensions[PAGES] = env
    return env


def awaits_nothing(env: Environment, name: str, seen: set[str] | None = None) -> bool:
    """Whether template `name` and every template it pulls in name no async global,
    filter or test (read from their source; a template named at run time counts as one
    that may)."""
    seen = seen if seen is not None else {name}
    if env.loader is None:
        return False
    source, _, _ = env.loader.get_source(env, name)
    ast = env.parse(source)
    # Every name read anywhere (meta.find_undeclared_variables misses some, e.g. in a `set`).
    if any(_is_async(env.globals.get(n.name)) for n in ast.find_all(nodes.Name)):
        return False
    if any(_is_async(env.filters.get(f.name)) for f in ast.find_all(nodes.Filter)):
        return False
    if any(_is_async(env.tests.get(t.name)) for t in ast.find_all(nodes.Test)):
        return False
    for referenced in meta.find_referenced_templates(ast):
        if referenced is None:
            return False
        if referenced not in seen:
            seen.add(referenced)
            if not awaits_nothing(env, referenced, seen):
                return False
    return True


def _is_async(value: Any) -> bool:
    """An async function, or an object whose class's __call__ is one (looked up on the class:
    `request` and `session` are proxies that must not be resolved here)."""
    if inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, partial):
        return inspect.iscoroutinefunction(value)
    return inspect.iscoroutinefunction(getattr(type(value), "__call__", None))  # noqa: B004


def _synchronous(app: Quart, name: str, context: dict[str, Any]) -> bool:
    known: dict[str, bool] = app.extensions.setdefault(SYNCHRONOUS, {})
    verdict = known.get(name)
    if verdict is None:
        verdict = known[name] = awaits_nothing(app.jinja_env, name)
    return verdict and not any(callable(v) and _is_async(v) for v in context.values())


def _template(app: Quart, name: str) -> Template:
    """The compiled page template; Jinja's own lookup (a locked LRU cache, keyed by a weak
    reference to the loader) is asked again only when templates reload (debug)."""
    env = page_environment(app)
    if env.auto_reload:
        return env.get_template(name)
    loaded: dict[str, Template] = app.extensions.setdefault(TEMPLATES, {})
    template = loaded.get(name)
    if template is None:
        template = loaded[name] = env.get_template(name)
        # Jinja keeps a template's globals as a ChainMap over the environment's, and every
        # render copies it into a dict key by key through the chain. Once the app serves
        # its globals are set (Flask refuses setup after the first request): one copy.
        template.globals = dict(template.globals)
    return template


async def render(template_name: str, context: dict[str, Any]) -> str:
    """Render a page template as Quart's `render_template` does (context processors and
    signals included), with the synchronous environment when the page awaits nothing."""
    app = app_ctx.app
    if not _synchronous(app, template_name, context):
        return await render_template(template_name, **context)
    await app.update_template_context(context)
    template = _template(app, template_name)
    if before_render_template.receivers:
        await before_render_template.send_async(
            app,
            _sync_wrapper=app.ensure_async,
            template=template,
            context=context,
        )
    html = template.render(context)
    if template_rendered.receivers:
        await template_rendered.send_async(
            app,
            _sync_wrapper=app.ensure_async,
            template=template,
            context=context,
        )
    return html
