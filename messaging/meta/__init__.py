"""WhatsApp Cloud API, Messenger and Instagram: webhooks in, Graph API sends out (docs/channels.md)."""
