"""ceip-transport-mail: a ceip transport that mails each report to a collecting mailbox (``smtp://``)."""

from ceip_transport_mail.transport import MailTransport

__all__ = ["MailTransport"]
