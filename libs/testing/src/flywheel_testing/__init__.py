"""Flywheel's test support, shared by every suite: the pytest plugin (`plugin`), the backends
it finds (`backends`), Kafka helpers (`kafka`), waiting (`waiting`), models trained here
(`models`), and the services run in this process (`platform`) or as processes
(`processes`)."""
