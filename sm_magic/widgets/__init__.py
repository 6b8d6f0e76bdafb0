"""The widget panel (``%sagemaker panel``)."""
