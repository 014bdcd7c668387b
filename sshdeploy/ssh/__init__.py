"""How the controller reaches the hosts: SSH connections, agent channels, forwards, probes.

``sshlib`` is the one door to asyncssh; ``pool`` one connection per host;
``channel`` the controller's end of one agent; ``forwarding`` the scheduler's
ports through SSH; ``diagnose`` and ``causes`` say why a connect or a start
failed; ``preflight`` is ``dask-ssh --check``.
"""
