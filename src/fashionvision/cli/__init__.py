"""fashionvision.cli"""
