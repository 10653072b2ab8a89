"""`tfbig pipeline`: one config from training to a promoted, served, reported model.

    from tfbig.config import load_config
    from tfbig.pipeline import run_pipeline
    result = run_pipeline(load_config("tfbig/configs/quickstart.yaml"))
    print(result.report)          # RUN_DIR/report/index.html
"""

from tfbig.pipeline.run import STAGES, PipelineError, PipelineResult, run_pipeline, serving_hint

__all__ = ["PipelineError", "PipelineResult", "run_pipeline", "serving_hint", "STAGES"]
