"""fashionvision.models"""
