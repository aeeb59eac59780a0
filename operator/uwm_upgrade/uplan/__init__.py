"""`kubectl uplan`: the kubectl plugin platform teams drive UpgradePlans with (status, approve, pause,
resume, retry, abort, wait, report). It talks to the cluster through `kubectl` itself, so contexts,
kubeconfigs and auth plugins work as they do for every other kubectl command."""
