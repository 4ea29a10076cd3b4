"""fashionvision.metrics"""
