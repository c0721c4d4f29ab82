"""The contract between Corral's services: NATS subjects and messages, Redis keys and
records. Defined here once; every service imports them and nothing else invents one."""
