from django.urls import path

from annotate import views

app_name = "annotate"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("judge/", views.judge, name="judge"),
    path("mine/", views.mine, name="mine"),
    path("mine/<int:pk>/", views.change, name="change"),
    path("campaigns/", views.campaigns, name="campaigns"),
    path("campaigns/<int:pk>/", views.campaign, name="campaign"),
]
