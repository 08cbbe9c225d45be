"""The engine of the gradient-trained algorithms (Factorization Machines; NTM and DeepAR next).

``beam_ml.nn.skeleton`` is the training skeleton every gradient-trained state shares (the
state base, pending mini-batches, progressive validation, rounds, epochs, the network
protocol); ``beam_ml.nn.engine`` the MXNet side: the device, seeded initialization,
parameter tables with their optimizer state, the optimizers and the example-weighted
merge. ``beam_ml.nn.fm`` is the Factorization Machine's network.
``beam_ml.transforms.epochs`` runs more than one epoch over bounded input in a Beam pipeline.

MXNet (1.9.1) is imported lazily, by :func:`beam_ml.nn.engine.mxnet`, the first time a
network is trained: ``import beam_ml`` and ``beam-ml --help`` never load it, and the
numpy-only parts (tables, payloads, merging, prediction) work without it.
"""
