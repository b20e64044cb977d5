"""On-vehicle telematics edge agent."""
