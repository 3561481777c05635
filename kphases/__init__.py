"""kphases: measure the learning phases of neural networks (Schneider & Prabhushankar, AAAI 2024)
and the early phase of training (Frankle, Schwab & Morcos, ICLR 2020) in TensorFlow/Keras.

Pipeline, one module per stage: config -> data -> models -> training (snapshots in the run store)
-> measurement (features, decoders, probes) -> phases -> figures (`reproduce/`).
Import the stage you need, e.g. `from kphases.training import train`.
"""
__version__ = "0.1.0"
