"""Stand-in for tensorflow_model_server in the local cluster: test and demo infrastructure only.

Nothing here is shipped with the operator. The local test cluster is a real
kube-apiserver with kwok-simulated nodes: pods get IPs in 127.1.0.0/16 but no
container ever runs. For every pod that carries the
``serving.tfoperator.dev/servedmodel`` label the stand-in plays the kubelet
(``kubelet.py``: probes, restarts with back-off, preStop and the grace period)
and ``tensorflow_model_server``: it
reads the pod's container args and volumes, and serves on the pod's IP and
ports what the real server would (``ModelService`` and ``PredictionService``
over gRPC, the REST API over HTTP), loading SavedModels with TensorFlow for real
so that a corrupt or missing ``saved_model.pb`` really fails to load.

Run it with ``python -m localdev.standin --kubeconfig PATH``. A pod annotation
``standin.tests.tfoperator.dev/load-delay-seconds`` (``"3"`` for every version,
or ``"4=30,5=2.5"`` per version) keeps versions in LOADING for that long, and
``standin.tests.tfoperator.dev/fault`` (``hang``, ``garbage``, ``slow=<seconds>``
or ``vanish``) breaks the pod's server on purpose, for the reliability tests
(see ``faults.py``).

Known differences from the real server:

* The real server exits at start when a configured model's initial version
  fails to load, or when the initial config assigns a version label to a
  version that is not AVAILABLE yet (without
  ``--allow_version_labels_for_unavailable_models``); its pod then
  crash-loops. It also opens its ports only once the initial load is done, and
  waits forever when a base path does not exist. The stand-in stays up, listens
  at once, reports the failed version as END with the error (or logs what the
  real server would have exited with), and keeps polling.
* ConfigMap files are read from the API, so a changed ConfigMap is seen at the
  next config poll instead of after the kubelet's sync delay (up to a minute or
  so). Files mounted with ``subPath`` are frozen at first read, like a real
  kubelet never updates them.
* ``emptyDir``, ``nfs`` and other volume kinds, and ``s3://``/``gs://`` base
  paths, are not reachable: they behave like a base path that does not exist.
* Loads of different models in one pod run concurrently (the real server's
  default is one load at a time per server); versions of one model load one at
  a time, highest first, with the real availability-preserving order.
* ``--file_system_poll_wait_seconds=0`` scans once per config applied (the real
  server scans once per process).
* Batching, warmup requests, monitoring (Prometheus), SSL and
  ``MultiInference`` are not emulated; those flags are accepted and ignored.
"""
