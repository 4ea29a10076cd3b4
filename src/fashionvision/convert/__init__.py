"""fashionvision.convert"""
