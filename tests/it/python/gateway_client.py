"""A client nobody here wrote: the official MCP Python SDK (`mcp` on PyPI) lists the
gateway's tools, prompts and resources, calls a tool (asking for its progress), gets a
prompt and reads a resource.

    python gateway_client.py URL TOOL ARGUMENTS_JSON PROMPT PROMPT_ARGUMENTS_JSON RESOURCE_URI

Prints one JSON object: the sorted tool and prompt names and resource URIs, the answers
as the SDK parsed them, and the progress the call reported, in the order it arrived.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(
    url: str, tool: str, arguments: dict, prompt: str, prompt_arguments: dict, uri: str
) -> None:
    async with streamable_http_client(url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            progress = []

            async def heard(done: float, total: float | None, message: str | None) -> None:
                progress.append({"progress": done, "total": total, "message": message})

            result = await session.call_tool(tool, arguments, progress_callback=heard)
            prompts = await session.list_prompts()
            got = await session.get_prompt(prompt, prompt_arguments)
            resources = await session.list_resources()
            contents = await session.read_resource(uri)
            print(
                json.dumps(
                    {
                        "server": init.server_info.name,
                        "protocol": init.protocol_version,
                        "tools": sorted(t.name for t in tools.tools),
                        "result": dump(result),
                        "progress": progress,
                        "prompts": sorted(p.name for p in prompts.prompts),
                        "prompt": dump(got),
                        "resources": sorted(str(r.uri) for r in resources.resources),
                        "read": dump(contents),
                    }
                )
            )


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1],
            sys.argv[2],
            json.loads(sys.argv[3]),
            sys.argv[4],
            json.loads(sys.argv[5]),
            sys.argv[6],
        )
    )
