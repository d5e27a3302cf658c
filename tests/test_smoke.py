def test_login_page_renders(client, network):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b"Log in" in response.content
