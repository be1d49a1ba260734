"""trajstream: real-time trajectory prediction and collision alerts on Apache Kafka.

The installed package has three parts, one per stage of the data flow, and a few shared
modules every part may import:

- :mod:`trajstream.simulator`: traffic that publishes positions (built-in engine, SUMO).
- :mod:`trajstream.model`: trajectory predictors (LSTM, constant velocity, CTRV), training
  and evaluation.
- :mod:`trajstream.stream`: the stream processor (admission, vehicle state, risk, alerts,
  Kafka and file I/O, metrics).
- :mod:`trajstream.contracts` (message schemas and vehicle defaults),
  :mod:`trajstream.errors` (the exceptions), :mod:`trajstream.inputs` and
  :mod:`trajstream.outputs` (reading and writing files) and :mod:`trajstream.signals` (how
  a command stops), shared by all three.

In the repository the three parts live in the top-level folders ``stream/``, ``model/`` and
``simulator/``; ``trajstream/`` links to them so a checkout imports exactly what a wheel
installs. ``model`` and ``simulator`` import only the parts of ``stream`` that define the
input (its codec and cadence to read positions files, its Kafka adapter to publish).
"""

__version__ = "0.2.0"
