"""The live map's server options, shared by ``trajstream map`` and ``trajstream demo``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from trajstream.errors import ConfigError

__all__ = ["DEFAULT_MAP_PORT", "map_options", "start_map_server"]

DEFAULT_MAP_PORT = 8765


def _opt(*names: str, env: str, **kw: Any) -> Callable[[Any], Any]:
    return click.option(*names, envvar=f"TRAJSTREAM_{env}", show_envvar=True,
                        show_default=True, **kw)


def map_options(*, port_off: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The server options; with ``port_off`` (the demo) ``--map-port 0`` turns the map off."""
    port_help = ("Serve the live map on this port (0 = off)." if port_off else
                 "Serve the live map on this port.")
    opts = [
        _opt("--map-host", env="MAP_HOST", default="127.0.0.1",
             help="Address the live map listens on; 0.0.0.0 exposes it to the network (it "
                  "shows where every vehicle is)."),
        _opt("--map-port", env="MAP_PORT", default=DEFAULT_MAP_PORT,
             type=click.IntRange(0 if port_off else 1, 65535), help=port_help),
        _opt("--map-fps", env="MAP_FPS", default=4.0, type=click.FloatRange(0, 30, min_open=True),
             help="Frames per second sent to each browser at most; slower browsers get fewer "
                  "(frames are skipped, never queued)."),
        _opt("--map-max-connections", env="MAP_MAX_CONNECTIONS", default=256,
             type=click.IntRange(min=1),
             help="Open connections at most (browsers and page loads); more are refused with "
                  "HTTP 503 until some close."),
    ]

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        for o in reversed(opts):
            f = o(f)
        return f

    return wrap


def start_map_server(hub: Any, kw: dict[str, Any]) -> Any:
    """A running MapServer for the options in ``kw``; ConfigError when it cannot listen."""
    from trajstream.stream.livemap.server import MapServer, ServerConfig

    cfg = ServerConfig(host=kw["map_host"], port=kw["map_port"], fps=kw["map_fps"],
                       max_connections=kw["map_max_connections"])
    try:
        return MapServer(hub, cfg).start()
    except OSError as exc:
        raise ConfigError(f"live map cannot listen on {cfg.host}:{cfg.port}: "
                          f"{exc.strerror or exc}") from exc
