"""fashionvision.engine"""
