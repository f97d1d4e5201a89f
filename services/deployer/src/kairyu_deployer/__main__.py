"""`python -m kairyu_deployer`: deploy inference workloads until SIGTERM."""

from kairyu_core import service
from kairyu_deployer.app import Deployer
from kairyu_deployer.settings import DeployerSettings

if __name__ == "__main__":
    service.run_controller(DeployerSettings, "deployer", Deployer.for_term)
