"""WAN for `p2p-market simulate --netns`: every node in its own network namespace,
joined through one userspace switch that delays, jitters, drops and cuts frames
(the kernel here has no netem)."""
