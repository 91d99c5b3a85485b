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

Each pod gets one *run* of the server (``PodServer.run()``, server.py), which
behaves like ``tensorflow_model_server`` of the pinned release (2.20.0): the
real flag grammar (flags.py), ports that open only after the initial load,
exit code 255 with main.cc's ``Failed to start server. Error: ...`` when the
first finished version of a model is END (or the config file is unreadable or
invalid, or the initial config labels a version that is not AVAILABLE), a
wait with closed ports while a base path is missing or empty, parallel
initial loads, warm-up replay while LOADING, and one bounded pool of
``--grpc_max_threads`` for every RPC. The run keeps its printed lines, and
its ``ExitStatus`` carries the kubelet's termination-message tail of them.
docs/local-cluster.md has the fidelity table (behaviour, real source file,
stand-in file, test).

Known differences from the real server:

* Nobody restarts an exited run yet: the supervisor (pods.py) logs the exit
  and the pod stays Running with closed ports (no restartCount, no
  CrashLoopBackOff) until a kubelet emulation calls ``run()`` again.
* ``num_initial_load_threads`` and the thread-count defaults use the CPUs
  of the machine running the stand-in (``Runtime.cpus``), not a node's.
  TensorFlow work itself runs on small shared thread pools; only the
  concurrency *semantics* (how many loads or RPCs run at once, what waits)
  follow the flags.
* ConfigMap files are read from the API, so a changed ConfigMap is seen at the
  next config poll instead of after the kubelet's sync delay (up to a minute or
  so); a ConfigMap that does not exist makes the run exit with NOT_FOUND,
  where a real kubelet would not start the container. Files mounted with
  ``subPath`` are frozen at first read, like a real kubelet never updates them.
* ``emptyDir``, ``nfs`` and other volume kinds, and ``s3://``/``gs://`` base
  paths, are not reachable: they behave like a base path that does not exist.
* ``--file_system_poll_wait_seconds=0`` scans once per config applied (the real
  server scans once per process).
* The usage text lists names, defaults and types but not the help sentences.
  Log lines have the real wording where the source was read (main.cc,
  server.cc, loader_harness.cc, retrier.cc, saved_model_warmup_util.cc), not
  always the real file:line.
* Warm-up records of MultiInference are accepted without running;
  ``num_model_warmup_threads`` is not emulated (one thread).
* Monitoring exports only the serving request count and latency metrics
  (monitoring.py), not TensorFlow's own; a monitoring config file that
  cannot be parsed costs the page instead of stopping the server.
* Batching, SSL, the gRPC socket path, the gRPC
  health service and ``MultiInference`` are not emulated; those flags are
  parsed and ignored.
"""
