
# The store as a Docker Swarm stack (containers/stack.yaml), checked end to end through port
# 4200 (BAZAR_PORT): scaling, rolling updates under load, a killed catalog; cleans up after
# itself and leaves the swarm only if it made it.
swarm-e2e:
    bash containers/swarm-e2e.sh
