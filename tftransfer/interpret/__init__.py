"""Why a fine-tuned model predicts what it does: saliency maps and influence functions.
"""
