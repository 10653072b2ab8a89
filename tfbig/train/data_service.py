"""Which tf.data service a run's training reads from (see `tfbig.data.service`).

It sits in train, not data, because it needs both the data's `DataService`
and distribute's launch environment and dispatcher check.
"""

from __future__ import annotations

import hashlib
import os

from tfbig.config import Config, ConfigError, replace
from tfbig.data.service import DataService
from tfbig.distribute.data_service import ENVIRONMENT, wait_for_dispatcher


def training_data_service(config: Config) -> DataService | None:
    """The tf.data service `config`'s training reads from, or None to read in-process.

    The dispatcher is `distribute.data_service.dispatcher`, or the one `tfbig
    launch --data-service-workers` started for this run (passed in
    $TFBIG_DATA_SERVICE, as TF_CONFIG is: it is where this launch runs, not
    what the run is, so it stays out of the run's config.yaml). It is
    validated like a config value, and waited for: TensorFlow retries an
    unreachable dispatcher silently for as long as the run lasts.
    """
    configured = config.distribute.data_service.dispatcher
    launched = os.environ.get(ENVIRONMENT, "")
    if launched and configured and launched != configured:
        raise ConfigError(
            f"distribute.data_service.dispatcher: the config names {configured!r} but tfbig "
            f"launch started {launched!r} for this run; drop the setting or --data-service-workers")
    if launched:
        config = replace(config, {"distribute.data_service.dispatcher": launched})
    dispatcher = config.distribute.data_service.dispatcher
    if not dispatcher:
        return None
    wait_for_dispatcher(dispatcher)
    run = hashlib.sha256(os.path.abspath(config.output.dir).encode()).hexdigest()[:12]
    return DataService(dispatcher=dispatcher, run=run)

