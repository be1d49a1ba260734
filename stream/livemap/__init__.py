"""The live map: vehicles, predicted paths with their uncertainty and alerts in a browser.

- :class:`MapHub` (hub.py): where feeders put the newest fleet snapshot, alerts and figures.
- Feeders: :class:`ProcessorTap` (tap.py) inside a processor (the demo), or
  :class:`KafkaFeed` (kafka_feed.py) reading the topics (``trajstream map``).
- :class:`MapServer` (server.py): the page and a WebSocket frame stream per viewer, thinned
  to the viewport (frames.py), rate-limited, acknowledged, never queued.
- static/: the page itself, one HTML file, a script and a style sheet; no build step, no
  library, nothing fetched at run time.
"""

from trajstream.stream.livemap.hub import MapHub
from trajstream.stream.livemap.server import MapServer, ServerConfig
from trajstream.stream.livemap.tap import ProcessorTap

__all__ = ["MapHub", "MapServer", "ProcessorTap", "ServerConfig"]
