"""`python -m kairyu_tuner`: run tuning Jobs until SIGTERM."""

from kairyu_core import service
from kairyu_tuner.app import Tuner
from kairyu_tuner.settings import TunerSettings

if __name__ == "__main__":
    service.run_controller(TunerSettings, "tuner", Tuner.for_term)
