"""SavedModel export, the serving limits on images, the model servers (TF Serving's binary or
KServe's, speaking TF Serving's REST format) and their client.
"""
