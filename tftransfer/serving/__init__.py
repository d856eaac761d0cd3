"""SavedModel export, the serving limits on images, and the model server and its client.
"""
