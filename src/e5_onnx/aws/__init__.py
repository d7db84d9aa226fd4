"""AWS Lambda: the handler and `e5-onnx bundle lambda`, which builds the zip it runs from.

    handler.py  the function: direct, API Gateway v1/v2 and Function URL events. Deployed
                functions name it `e5_onnx.aws_lambda.handler` (e5_onnx/aws_lambda.py, a shim)
    bundle.py   the command: pip for Lambda's platform, prune, .pyc, model, zip, size limits
    prune.py    what the bundle drops (each removal measured); ELF DT_NEEDED reading

Nothing is imported here: a cold start imports the handler and what it needs, never the bundler.
"""
