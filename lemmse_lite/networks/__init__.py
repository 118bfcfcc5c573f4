"""The networks: ``models`` (local CNNs with receptive field P), ``training`` (``train``,
``TrainConfig``, run folders), ``zoo`` (the course's trained networks, cached or shipped) and
``shipped`` (the list of networks in ``weights/``). Importing this package runs nothing."""
