"""`quart --app quart_auth_app send-test-mail ADDRESS`: check the mail set-up end to end."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from .mail.messages import DEFAULT_SENDER, build_message
from .mail.transport import MailError, Transport, transport_from_config
from .validation import ValidationFailed, check_email

if TYPE_CHECKING:
    from quart import Quart


async def _send_test(app: Quart, transport: Transport, address: str) -> None:
    sender = str(app.config.get("MAIL_FROM") or DEFAULT_SENDER)
    async with app.app_context():
        message = await build_message("test", address, {}, sender)
    await transport.send(message)


def register_mail_commands(app: Quart) -> None:
    """Attach `send-test-mail` to `app.cli`."""

    @app.cli.command("send-test-mail")
    @click.argument("address")
    def send_test_mail(address: str) -> None:
        """Send a test message to ADDRESS now, through the configured transport.

        Straight through MAIL_URL (or the .eml folder), not the outbox: a failure shows here.
        """
        try:
            address = check_email(address)
        except ValidationFailed as exc:
            raise click.BadParameter(exc.fields["email"], param_hint="ADDRESS") from None
        try:
            transport = transport_from_config(app.config, app.instance_path)
            asyncio.run(_send_test(app, transport, address))
        except (ValueError, MailError) as exc:
            raise click.ClickException(f"Could not send: {exc}") from None
        click.echo(f"Sent a test message to {address} via {transport.describe()}.")
